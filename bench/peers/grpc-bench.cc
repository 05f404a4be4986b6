// SPDX-License-Identifier: MIT
//
// gRPC C++ beside herd, over a Unix socket, same figures and names as
// bench/herd.c prints for herd:
//
//   grpc-bench N PIPE INFLIGHT ITEMS SIZE
//
// a unary round trip N times (call_rtt), PIPE unary calls with INFLIGHT in
// flight on one channel through the async API (calls_per_s), and one server
// stream of ITEMS messages of SIZE bytes (stream_mb_per_s). The server is a
// child process (forked before gRPC starts in either), as a herd worker is.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "echo.grpc.pb.h"

extern "C" {
#include "stats.h"
}

using herdbench::Blob;
using herdbench::Echo;

namespace
{

/* A wedged run ends loudly (SIGALRM) rather than holding CI until its own timeout. */
constexpr unsigned MAX_SECONDS = 900;

pid_t server = -1;

class EchoService final : public Echo::Service
{
	grpc::Status
	Call(grpc::ServerContext *, const Blob *req, Blob *res) override
	{
		*res = *req;
		return grpc::Status::OK;
	}

	grpc::Status
	Stream(grpc::ServerContext *, const Blob *req, grpc::ServerWriter<Blob> *out) override
	{
		Blob item;

		item.mutable_data()->assign((size_t)req->size(), 'x');
		for (int64_t i = 0; i < req->count(); i++) {
			if (!out->Write(item))
				return grpc::Status(grpc::StatusCode::CANCELLED, "reader gone");
		}
		return grpc::Status::OK;
	}
};

[[noreturn]] void
fail(const std::string &what)
{
	fprintf(stderr, "grpc-bench: %s\n", what.c_str());
	if (server > 0) {
		kill(server, SIGTERM);
		waitpid(server, NULL, 0);
	}
	exit(1);
}

[[noreturn]] void
serve(const std::string &addr)
{
	EchoService service;
	grpc::ServerBuilder builder;

	builder.AddListeningPort(addr, grpc::InsecureServerCredentials());
	builder.RegisterService(&service);
	std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
	if (!server)
		fail("cannot listen on " + addr);
	server->Wait();
	exit(0);
}

void
rtt(Echo::Stub &stub, long n)
{
	struct samples s = {};
	Blob req, res;

	req.set_count(1);
	for (long i = 0; i < n; i++) {
		grpc::ClientContext ctx;
		uint64_t t0 = bench_now_ns();
		grpc::Status st = stub.Call(&ctx, req, &res);

		if (!st.ok())
			fail("call: " + st.error_message());
		samples_add(&s, bench_now_ns() - t0);
	}
	samples_report(&s, "call_rtt", "grpc_unary");
	samples_free(&s);
}

struct AsyncCall {
	grpc::ClientContext ctx;
	Blob res;
	grpc::Status status;
	std::unique_ptr<grpc::ClientAsyncResponseReader<Blob>> reader;
};

void
start_call(Echo::Stub &stub, grpc::CompletionQueue &cq, const Blob &req)
{
	AsyncCall *c = new AsyncCall;

	c->reader = stub.AsyncCall(&c->ctx, req, &cq);
	c->reader->Finish(&c->res, &c->status, c);
}

void
pipeline(Echo::Stub &stub, long n, long inflight)
{
	grpc::CompletionQueue cq;
	Blob req;
	long sent = 0, done = 0;
	uint64_t t0 = bench_now_ns();
	void *tag;
	bool ok;
	char name[64];

	req.set_count(1);
	for (; sent < inflight && sent < n; sent++)
		start_call(stub, cq, req);
	while (done < n && cq.Next(&tag, &ok)) {
		AsyncCall *c = static_cast<AsyncCall *>(tag);

		if (!ok || !c->status.ok())
			fail("async call: " + c->status.error_message());
		delete c;
		done++;
		if (sent < n) {
			start_call(stub, cq, req);
			sent++;
		}
	}
	snprintf(name, sizeof(name), "grpc_inflight%ld", inflight);
	bench_report_value(
	    "calls_per_s", name, (double)n / ((double)(bench_now_ns() - t0) / 1e9), "1/s");
	cq.Shutdown();
	while (cq.Next(&tag, &ok))
		;
}

void
stream(Echo::Stub &stub, long items, long size)
{
	grpc::ClientContext ctx;
	Blob req, item;
	long got = 0;
	uint64_t bytes = 0, t0 = bench_now_ns();
	char name[64];

	req.set_count(items);
	req.set_size(size);
	std::unique_ptr<grpc::ClientReader<Blob>> reader = stub.Stream(&ctx, req);
	while (reader->Read(&item)) {
		bytes += item.data().size();
		got++;
	}
	grpc::Status st = reader->Finish();
	if (!st.ok() || got != items)
		fail("stream: " + st.error_message());
	double secs = (double)(bench_now_ns() - t0) / 1e9;
	snprintf(name, sizeof(name), "grpc_stream_size%ld", size);
	bench_report_value("stream_mb_per_s", name, (double)bytes / 1e6 / secs, "MB/s");
}

} // namespace

int
main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: grpc-bench N PIPE INFLIGHT ITEMS SIZE\n");
		return 2;
	}
	char dir[] = "/tmp/herd-grpc-XXXXXX";
	if (!mkdtemp(dir))
		fail("mkdtemp");
	std::string path = std::string(dir) + "/grpc.sock", addr = "unix:" + path;

	server = fork();
	if (server < 0)
		fail("fork");
	/* Alarms are not inherited: each process sets its own. */
	alarm(MAX_SECONDS);
	if (server == 0) {
		server = -1;
		serve(addr);
	}

	std::shared_ptr<grpc::Channel> channel =
	    grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
	if (!channel->WaitForConnected(gpr_time_add(
	        gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_seconds(10, GPR_TIMESPAN))))
		fail("the server did not answer within 10 s");
	std::unique_ptr<Echo::Stub> stub = Echo::NewStub(channel);

	rtt(*stub, atol(argv[1]));
	pipeline(*stub, atol(argv[2]), atol(argv[3]));
	stream(*stub, atol(argv[4]), atol(argv[5]));

	kill(server, SIGTERM);
	waitpid(server, NULL, 0);
	unlink(path.c_str());
	rmdir(dir);
	return 0;
}
