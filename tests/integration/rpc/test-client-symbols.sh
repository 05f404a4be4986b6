#!/bin/sh
# libherd exports exactly the public herd_* API: no herd__ internals, no proto_
# codec, nothing else. Usage: test-client-symbols.sh LIBHERD.so
set -eu
lib=$1
syms=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ { sub(/@.*/, "", $3); print $3 }')
status=0
for s in $syms; do
	case $s in
	herd__*) echo "internal symbol exported: $s"; status=1 ;;
	herd_*) ;;
	*) echo "non-herd symbol exported: $s"; status=1 ;;
	esac
done
# The calling side's entry points must all be there.
for s in herd_conn_connect herd_conn_process herd_conn_get_fd herd_conn_get_events \
	herd_conn_get_timeout herd_call herd_call_async herd_call_str herd_call_cancel \
	herd_oneway herd_stream_open herd_stream_next herd_stream_cancel herd_sink_open \
	herd_sink_send herd_sink_finish herd_conn_attach_ev herd_master_connect \
	herd_master_spawn herd_master_spawn_async herd_master_on_failure herd_worker_connect \
	herd_master_attach_ev herd_start_app herd_self_path herd_error_name herd_version \
	herd_pool_new herd_pool_close herd_pool_process herd_pool_get_fd herd_pool_attach_ev \
	herd_job_new herd_job_start herd_job_wait herd_pool_map herd_pool_map_reduce \
	herd_pool_find herd_pool_submit herd_pool_call herd_progress_bar herd_map_reduce \
	herd_counts_add herd_combine_counts herd_counts_top herd_counts_total herd_request_acc \
	herd_request_reply_acc; do
	echo "$syms" | grep -qx "$s" || { echo "missing export: $s"; status=1; }
done
n=$(echo "$syms" | wc -l)
echo "$n symbols exported"
exit $status
