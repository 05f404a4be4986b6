#!/usr/bin/env python3
# Prints bench/run.sh's results as a Markdown table: herd's figure, the baseline
# measured in the same run, their ratio, and the target the ratio must meet.
#   table.py RESULTS.json ALL_CPUS ONE_CPU
import json
import sys

path, all_cpus, one_cpu = sys.argv[1:4]
rows = [json.loads(line) for line in open(path)]
by = {(r["cpus"], r["figure"], r["variant"]): r for r in rows}


def get(cpus, fig, var, key="value"):
    r = by.get((cpus, fig, var))
    return r.get(key) if r else None


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "us" and v >= 10000:
        return f"{v / 1000:.1f} ms"
    if unit == "/s":
        if v < 1000:
            return f"{v:.0f} /s"
        return f"{v / 1000:.1f} k/s" if v < 1e6 else f"{v / 1e6:.2f} M/s"
    return f"{v:.1f} {unit}".strip()


print("| figure | CPUs | herd | baseline | ratio | target |")
print("|---|---|---:|---:|---:|---|")
# A figure whose program failed is named first, never left as a silent "-".
for r in rows:
    if r["figure"] == "failed":
        print(f"| **FAILED**: {r['variant']} (exit {r['value']}) | {r['cpus']} | | | | |")


def row(label, cpus, h, b, unit, target="", op=None):
    if h is None and b is None:
        return
    ratio = "-"
    if h is not None and b:
        # A peer can be hundreds of times slower: keep such ratios from reading 0.00x.
        ratio = f"{h / b:.2f}x" if h / b >= 0.01 else f"{h / b:.4f}x"
        if op:
            ratio += " ok" if op(h / b) else " **missed**"
    print(f"| {label} | {cpus} | {fmt(h, unit)} | {fmt(b, unit)} | {ratio} | {target} |")


le = lambda limit: (lambda r: r <= limit)
ge = lambda limit: (lambda r: r >= limit)

for cpus in (all_cpus, one_cpu):
    v = lambda fig, var, key="value": get(cpus, fig, var, key)
    for p in ("p50", "p99"):
        row(f"call round trip {p} vs JSON ping-pong", cpus,
            v("call_rtt", "herd_call", p + "_us"), v("call_rtt", "pingpong_json", p + "_us"),
            "us", "≤ 1.5x", le(1.5))
    row("call round trip p50 vs raw ping-pong", cpus,
        v("call_rtt", "herd_call", "p50_us"), v("call_rtt", "pingpong_raw", "p50_us"), "us")
    for k in (1, 64):
        h = v("calls_per_s", f"herd_inflight{k}_workers1")
        row(f"calls/s, {k} in flight vs JSON pipeline", cpus, h,
            v("calls_per_s", f"pipeline_json_inflight{k}"), "/s")
        row(f"calls/s, {k} in flight vs raw pipeline", cpus, h,
            v("calls_per_s", f"pipeline_raw_inflight{k}"), "/s")
        # The target is for pipelined calls; one in flight is shown for reference.
        row(f"calls/s, {k} in flight vs Python Pool", cpus, h,
            v("calls_per_s", f"python_pool_inflight{k}_workers1"), "/s",
            *(("≥ 10x", ge(10)) if k > 1 else ()))
    row("calls/s, 1 in flight, 2 workers vs Python Pool", cpus,
        v("calls_per_s", "herd_inflight1_workers2"),
        v("calls_per_s", "python_pool_inflight1_workers2"), "/s")
    h = v("calls_per_s", "herd_inflight64_workers2")
    row("calls/s, 64 in flight, 2 workers vs libev echo server", cpus, h,
        v("calls_per_s", "echo_server_16x16"), "/s", "≥ 0.5x", ge(0.5))
    row("calls/s, 64 in flight, 2 workers vs Python Pool", cpus, h,
        v("calls_per_s", "python_pool_inflight64_workers2"), "/s", "≥ 10x", ge(10))
    h = v("stream_items_per_s", "herd_stream_size0")
    row("stream items/s (integers) vs raw bulk of the same lines", cpus, h,
        v("stream_items_per_s", "items_raw_size0"), "/s")
    row("stream items/s (integers) vs jansson both ends", cpus, h,
        v("stream_items_per_s", "items_json_size0"), "/s")
    h = v("stream_mb_per_s", "herd_stream_size65536")
    row("stream MB/s (64 KiB items) vs raw bulk write", cpus, h,
        v("stream_mb_per_s", "bulk_raw"), "MB/s")
    row("stream MB/s (64 KiB items) vs jansson both ends", cpus, h,
        v("stream_mb_per_s", "items_json_size65536"), "MB/s")
    # Bytes values (PROTOCOL.md 1.1): out of band between these two local peers.
    row("stream MB/s (64 KiB bytes items) vs raw bulk write", cpus,
        v("stream_mb_per_s", "herd_stream_bytes_size65536"), v("stream_mb_per_s", "bulk_raw"),
        "MB/s", "≥ 0.3x", ge(0.3))
    row("calls with 1 MiB bytes each way, MB/s vs raw bulk write", cpus,
        v("bytes_call_mb_per_s", "herd_bytes_call_size1048576"),
        v("stream_mb_per_s", "bulk_raw"), "MB/s", "≥ 0.3x", ge(0.3))
    # gRPC C++ over a Unix socket (bench/peers/grpc-bench.cc), the same figures.
    for p in ("p50", "p99"):
        row(f"call round trip {p} vs gRPC unary", cpus, v("call_rtt", "herd_call", p + "_us"),
            v("call_rtt", "grpc_unary", p + "_us"), "us")
    row("calls/s, 64 in flight vs gRPC async", cpus, v("calls_per_s", "herd_inflight64_workers1"),
        v("calls_per_s", "grpc_inflight64"), "/s")
    row("stream MB/s (64 KiB items) vs gRPC server stream", cpus, h,
        v("stream_mb_per_s", "grpc_stream_size65536"), "MB/s")
    row("stream MB/s (64 KiB bytes items) vs gRPC server stream", cpus,
        v("stream_mb_per_s", "herd_stream_bytes_size65536"),
        v("stream_mb_per_s", "grpc_stream_size65536"), "MB/s")
    for p in ("p50", "p99"):
        row(f"spawn-to-ready {p} vs fork+exec+handshake", cpus,
            v("spawn_ready", "herd_spawn", p + "_us"),
            v("spawn_ready", "fork_exec_handshake", p + "_us"), "us", "≤ 1.5x", le(1.5))
    row("spawns/s (spawn and stop) vs fork+exec+handshake", cpus,
        v("spawns_per_s", "herd_spawn_and_shutdown"),
        v("spawns_per_s", "fork_exec_handshake"), "/s")

v = lambda fig, var, key="value": get(all_cpus, fig, var, key)
grace = v("grace_ms", "herdd")
bound = (grace + 50) * 1000 if grace is not None else None
for p in ("p50", "p99"):
    row(f"worker SIGKILL → on_failure {p}", all_cpus,
        v("failure_detection", "sigkill_to_on_failure", p + "_us"), None, "us")
for kind, var in (("exiting", "master_sigkill_to_last_worker_exit"),
                  ("wedged", "wedged_master_sigkill_to_last_worker_exit")):
    for p in ("p50", "p99"):
        row(f"master SIGKILL → 50 {kind} workers reaped {p} vs grace + 50 ms", all_cpus,
            v("orphan_kill", var, p + "_us"), bound, "us", "≤ 1x", le(1.0))


def speedup(label, cpus, h, b, per, target, op):
    """A row whose ratio is how many times faster herd's time h is than b, per worker."""
    if h is None or b is None:
        return
    r = b / h / per
    print(f"| {label} | {cpus} | {h:.2f} s | {b:.2f} s | {r:.2f}x"
          f"{(' ok' if op(r) else ' **missed**') if op else ''} | {target} |")


# Pools, on every CPU: tiny tasks against Python's pools (best chunksize each).
pool = {r["variant"]: r["value"] for r in rows
        if r["cpus"] == all_cpus and r["figure"] == "pool_tasks_per_s"}
h_map = next((x for k, x in pool.items() if k.startswith("herd_pool_map_workers")), None)
h_unord = next((x for k, x in pool.items() if k.startswith("herd_pool_map_unordered_workers")),
               None)
h_unord1 = next((x for k, x in pool.items()
                 if k.startswith("herd_pool_map_unordered_chunksize1")), None)
py = lambda api: next((x for k, x in pool.items()
                       if k.startswith(f"python_{api}_workers")), None)
row("pool map tasks/s (echo) vs Pool.map", all_cpus, h_map, py("pool_map"), "/s")
row("pool map unordered tasks/s vs imap_unordered", all_cpus, h_unord,
    py("pool_imap_unordered"), "/s")
row("pool map tasks/s vs ProcessPoolExecutor.map", all_cpus, h_map,
    py("process_pool_executor_map"), "/s")
best_py = max((x for k, x in pool.items()
               if k.startswith("python_") and "chunksize1" not in k), default=None)
best_h = max((x for x in (h_map, h_unord) if x is not None), default=None)
row("pool map tasks/s, best vs best Python", all_cpus, best_h, best_py, "/s", "≥ 10x", ge(10))
row("pool map unordered tasks/s vs imap_unordered, chunksize 1", all_cpus, h_unord1,
    py("pool_imap_unordered_chunksize1"), "/s")
# dask.distributed (bench/peers/dask-bench.py): one task an element, as dask maps.
dask = next((x for k, x in pool.items() if k.startswith("dask_client_map_workers")), None)
row("pool map tasks/s, best vs dask client.map", all_cpus, best_h, dask, "/s")
row("pool map tasks/s, chunksize 1 vs dask client.map", all_cpus, h_unord1, dask, "/s")
starts = sorted(int(r["variant"][len("herd_pool_workers"):]) for r in rows
                if r["cpus"] == all_cpus and r["variant"].startswith("herd_pool_workers"))
for w in starts:
    row(f"pool of {w} start-up vs dask LocalCluster of {w}", all_cpus,
        v("pool_start_ms", f"herd_pool_workers{w}"),
        v("pool_start_ms", f"dask_local_cluster_workers{w}"), "ms")
# GNU parallel (bench/peers/parallel.py): lines/s of the whole command.
for r in rows:
    if r["cpus"] == all_cpus and r["variant"].startswith("herdctl_map_j"):
        j = r["variant"][len("herdctl_map_j"):]
        row(f"herdctl map -j {j}, lines/s vs GNU parallel -j {j} echo", all_cpus, r["value"],
            v("map_lines_per_s", f"gnu_parallel_j{j}"), "/s")
# wordfreq: speed-up per worker over the sequential C count, and against Python.
wf = {r["variant"]: r["value"] for r in rows
      if r["cpus"] == all_cpus and r["figure"] == "wordfreq_s"}
seq = wf.get("c_sequential")
ns = sorted(int(k[len("herd_workers"):]) for k in wf if k.startswith("herd_workers"))
for n in ns:
    speedup(f"wordfreq, {n} worker{'s' * (n > 1)} vs sequential C (speed-up per CPU)", all_cpus,
            wf[f"herd_workers{n}"], seq, n, "≥ 0.8x", ge(0.8))
for n in ns:
    speedup(f"wordfreq, {n} worker{'s' * (n > 1)} vs Python Pool of {n} (times faster)", all_cpus,
            wf[f"herd_workers{n}"], wf.get(f"python_pool_workers{n}"), 1, "", None)
for n in sorted(int(k[len("python_herd_pool_workers"):]) for k in wf
                if k.startswith("python_herd_pool_workers")):
    speedup(f"wordfreq in Python, herd.Pool of {n} vs multiprocessing Pool of {n} (times faster)",
            all_cpus, wf[f"python_herd_pool_workers{n}"], wf.get(f"python_pool_workers{n}"), 1,
            "", None)
# The Python package (bench/py-pool.py): herd.Pool.map of a Python function
# against what it replaces, best chunksize each; a Python master's calls.
py = {r["variant"]: r["value"] for r in rows
      if r["cpus"] == all_cpus and r["figure"] == "py_pool_tasks_per_s"}
pyv = lambda api: next((x for k, x in py.items() if k.startswith(api + "_workers")), None)
for mode, label in (("herd_pool_map", "pickle, the default"), ("herd_pool_map_json", "JSON")):
    row(f"herd.Pool.map tasks/s (Python echo, {label}) vs multiprocessing Pool.map", all_cpus,
        pyv(mode), pyv("python_pool_map"), "/s", "≥ 1x", ge(1))
    row(f"herd.Pool.map tasks/s (Python echo, {label}) vs ProcessPoolExecutor.map", all_cpus,
        pyv(mode), pyv("process_pool_executor_map"), "/s", "≥ 1x", ge(1))
for k in (1, 64):
    row(f"Python master calls/s, {k} in flight: C worker vs Python worker", all_cpus,
        v("py_master_calls_per_s", f"c_worker_inflight{k}"),
        v("py_master_calls_per_s", f"py_worker_inflight{k}"), "/s")
# A crash's cost: extra time against one spawn plus the dead worker's tasks.
crash = {r["variant"]: r["value"] for r in rows
         if r["cpus"] == all_cpus and r["figure"] == "crash_cost"}
for k in sorted(crash):
    if k.endswith("_extra_ms"):
        m = k[:-len("_extra_ms")]
        row(f"{m}: no crash → one worker SIGKILLed", all_cpus, crash.get(f"{m}_one_sigkill_ms"),
            crash.get(f"{m}_base_ms"), "ms")
        row(f"{m}: extra time of the SIGKILL vs one spawn + lost tasks", all_cpus, crash[k],
            crash.get(f"{m}_bound_ms"), "ms", "≤ 1x", le(1.0))
        row(f"{m}: SIGKILL → replacement serving, during the map, vs an idle start", all_cpus,
            crash.get(f"{m}_respawn_ms"), crash.get("pool_of_one_start_ms"), "ms")
sizes = sorted({int(r["variant"].split("_")[1]) for r in rows
                if r["figure"] == "scale" and r["cpus"] == all_cpus})
if sizes:
    print(f"| herdd RSS, no workers | {all_cpus} | "
          f"{fmt(v('daemon_rss', f'before_{sizes[0]}_kib'), 'KiB')} | | | |")
for n in sizes:
    print(f"| herdd RSS with {n:,} workers | {all_cpus} | "
          f"{fmt(v('daemon_rss', f'with_{n}_workers_kib'), 'KiB')} | | | |")
    row(f"herdd RSS per worker ({n:,} workers) vs 8 KiB", all_cpus,
        v("daemon_rss", f"per_worker_kib_{n}"), 8.0, "KiB", "≤ 1x", le(1.0))
if len(sizes) == 2:
    small, large = sizes
    for what, label in (("spawn", "all ready"), ("stop", "all reaped")):
        key = "all_ready" if what == "spawn" else "all_reaped"
        h = v("scale", f"{what}_{large}_{key}")
        b = v("scale", f"{what}_{small}_{key}")
        row(f"{what} {large:,} workers ({label}) vs {small:,}", all_cpus, h, b, "ms",
            f"≤ {large / small:.0f}x", le(large / small))

# herdd under load (bench/run-load.sh): the issue 19 targets, as ratios of the same run.
load = {(r["figure"], r["variant"]): r for r in rows
        if r["cpus"] == all_cpus and r["figure"].startswith(("load", "list_cost", "ping_one"))}
lr = next((r for (f, _), r in load.items() if f == "load"), None)
if lr:
    tag = f"{lr['variant'].replace('masters', '').replace('_rate', ' masters, ')}/s"
    print(f"| load ({tag}): sustained | {all_cpus} | {fmt(lr['sustained_per_s'], '/s')} "
          f"| {fmt(lr['offered_per_s'], '/s')} | {lr['sustained_per_s'] / lr['offered_per_s']:.2f}x | |")
    for p in ("p50", "p99", "p999"):
        row(f"load ({tag}): latency {p} vs 5 ms", all_cpus, lr[p + "_us"], 5000.0, "us",
            "≤ 1x" if p == "p99" else "", le(1.0) if p == "p99" else None)
    print(f"| load ({tag}): herdd CPU | {all_cpus} | {lr['herdd_cpu_pct']:.0f}% | | | |")
    idle, busy = load.get(("load_spawn_ready", "idle")), load.get(("load_spawn_ready", "under_load"))
    if idle and busy:
        for p in ("p50", "p99"):
            row(f"load: spawn-to-ready {p} under load vs idle (same spawns/s)", all_cpus,
                busy[p + "_us"], idle[p + "_us"], "us", "≤ 2x" if p == "p99" else "",
                le(2.0) if p == "p99" else None)
    warm = load.get(("load_spawn_ready", "idle_back_to_back"))
    if warm:
        for p in ("p50", "p99"):
            row(f"load: spawn-to-ready {p}, idle, back to back", all_cpus, warm[p + "_us"], None,
                "us")
    mk = load.get(("load_master_kill", "to_last_worker_exit"))
    if mk and mk["n"]:
        row("load: master SIGKILL → its workers exited, p50", all_cpus, mk["p50_us"], None, "us")
        row("load: master SIGKILL → its workers exited, worst", all_cpus, mk["max_us"], None, "us")
for (f, var), r in sorted(load.items()):
    if f == "list_cost":
        row(f"list of {var.replace('workers', '').replace('_', ' workers, ', 1).replace('_', ' ')}: "
            f"herdd CPU beyond its idle {r.get('herdd_idle_cpu_pct', 0):.0f}% vs 1 ms", all_cpus,
            r["value"], 1000.0, "us", "≤ 1x", le(1.0))
nl, wl = load.get(("load_lister", "no_lister")), load.get(("load_lister", "lister"))
if nl and wl:
    row(f"load: others' p99 with a client listing {wl['workers']:,} workers vs without", all_cpus,
        wl["p99_us"], nl["p99_us"], "us", "≤ 2x", le(2.0))
pr = next((r for (f, _), r in load.items() if f == "ping_one_core"), None)
if pr:
    row("ping/s, herdd on one CPU vs 50 k/s", all_cpus, pr["sustained_per_s"], 50000.0, "/s",
        "≥ 1x", ge(1.0))
    row("ping, herdd on one CPU: p99 vs 20 ms", all_cpus, pr["p99_us"], 20000.0, "us", "≤ 1x",
        le(1.0))
checks = [r for r in rows if r["figure"] == "load_check"]
if checks:
    lost = sum(1 for r in checks if not r["value"])
    print(f"| load: nothing lost ({len(checks)} modes, "
          f"{sum(r['requests'] for r in checks):,} requests) | {all_cpus} | "
          f"{'ok' if not lost else f'**{lost} LOST**'} | | | |")

# supervisord (bench/peers/supervisord-bench.py): as many programs as herdd's workers.
for n in sizes:
    h = v("scale", f"spawn_{n}_all_ready")
    row(f"spawn {n:,} workers (all ready) vs supervisord's {n:,} RUNNING", all_cpus, h,
        v("peer_scale", f"supervisord_spawn_{n}_all_running"), "ms")
    row(f"spawn {n:,} workers (all ready) vs supervisord's {n:,} serving", all_cpus, h,
        v("peer_scale", f"supervisord_spawn_{n}_all_serving"), "ms")
    row(f"stop {n:,} workers (all reaped) vs supervisord's {n:,} STOPPED", all_cpus,
        v("scale", f"stop_{n}_all_reaped"), v("peer_scale", f"supervisord_stop_{n}_all_stopped"),
        "ms")

# A peer that did not report fails the run: its rows must not quietly read "-".
missing = [f"{fig} {var} ({c})" for c in (all_cpus, one_cpu)
           for fig, var in (("call_rtt", "grpc_unary"), ("calls_per_s", "grpc_inflight64"),
                            ("stream_mb_per_s", "grpc_stream_size65536"))
           if get(c, fig, var, "n" if fig == "call_rtt" else "value") is None]
missing += [f"{fig} {prefix}* ({all_cpus})"
            for fig, prefix in (("pool_tasks_per_s", "dask_client_map_"),
                                ("pool_start_ms", "dask_local_cluster_"),
                                ("map_lines_per_s", "gnu_parallel_"),
                                ("peer_scale", "supervisord_spawn_"))
            if not any(r["cpus"] == all_cpus and r["figure"] == fig
                       and r["variant"].startswith(prefix) for r in rows)]
if missing:
    sys.exit("table.py: peers that reported nothing: " + ", ".join(missing))
