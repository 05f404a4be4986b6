/* SPDX-License-Identifier: MIT */
/*
 * The rpc_parallel examples as one herd worker type, served by the
 * rpc-example-worker executable and in-process by tests.
 *
 * Functions (params -> result):
 *   sum {n}                  call: 0 + 1 + ... + n-1 (sum 42 = 861); logs "sum: N"
 *   product {n}              call: 1 * 2 * ... * n, n <= 20 (product 10 = 3628800)
 *   fail {message?}          call: always fails with function_failed and message
 *   echo ANY                 call: returns its params
 *   count {n, delay_ms?}     pipe: items 0..n-1, one per delay_ms (0: as fast as
 *                            the reader takes them), result {"count": n}
 *   sum_stream {}            sink: sums integer items, result the total
 *   watch {updates}          state: initial item is the notes array, then each
 *                            note added afterwards, result {"updates": N}
 *   note {text}              oneway: appends text to the worker's notes
 *   notes {}                 call: the notes array
 *   sleep {ms}               call: replies {"slept": ms} from an ev_timer
 *   log {message, level?}    call: herd_log()s message, returns {}
 *   stats {}                 call: {"cancelled": streams that saw a cancel,
 *                            "conn_calls": calls on this connection,
 *                            "conn_init": this connection's init argument,
 *                            "worker_init": the worker's init argument,
 *                            "env_channel_fd": whether HERD_CHANNEL_FD is set,
 *                            "fd3_cloexec": whether fd 3 is open and close-on-exec}
 *   worker_fail {message}    call: replies {}, then herd_worker_fail(message)
 *                            from the loop (the process exits: executable only)
 *
 * Cancel callbacks log "<function>: cancelled" at debug level (seen on
 * herd.logs), and count logs "count: the reader is slow; waiting" the first
 * time a write meets backpressure.
 *
 * Worker init fails when the init argument is {"fail_init": MSG}; connection
 * init fails when the client's hello init is {"fail_conn": MSG}.
 */
#ifndef HERD_EXAMPLE_WORKER_H
#define HERD_EXAMPLE_WORKER_H

#include <herd/worker.h>

extern const struct herd_worker_type example_worker_type;

#endif
