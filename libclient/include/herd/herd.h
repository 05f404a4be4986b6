/* SPDX-License-Identifier: MIT */
/*
 * libherd umbrella header: everything except the libev glue (herd/herd-ev.h),
 * so programs with another event loop never include <ev.h>.
 */
#ifndef HERD_HERD_H
#define HERD_HERD_H

#include <jansson.h>

#include <herd/protocol.h>
#include <herd/common.h>
#include <herd/client.h>
#include <herd/worker.h>
#include <herd/master.h>
#include <herd/pool.h>

#endif
