/* SPDX-License-Identifier: MIT */
/*
 * Built by check-install.sh against an installed herd, with nothing but
 * `pkg-config --cflags --libs herd-ev` (it uses the libev attach): proves
 * the installed headers and library are enough to write a worker and call
 * it. The parent serves "add" on a socket bound before the fork; the child connects, calls it and exits with
 * the verdict; the parent's loop ends when the child is reaped.
 */
#include <herd/herd-ev.h>
#include <herd/herd.h>

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void
add(herd_request *req, json_t *arg)
{
	json_int_t a = json_integer_value(json_array_get(arg, 0));
	json_int_t b = json_integer_value(json_array_get(arg, 1));

	herd_request_reply(req, json_integer(a + b));
}

/* The smallest worker type, as examples/sum-demo.c writes one: the install test stands alone. */
static const struct herd_function functions[] = {
	{ "add", HERD_KIND_CALL, add },
	{ NULL, 0, NULL },
};

static const struct herd_worker_type adder = {
	.name = "adder",
	.functions = functions,
};

static int
client(const char *path)
{
	herd_conn *conn = NULL;
	herd_error *err = NULL;
	json_t *args = json_pack("[ii]", 2, 3);
	json_t *result = NULL;
	int r;

	r = herd_conn_connect(path, NULL, NULL, &conn, &err);
	if (r < 0) {
		fprintf(stderr, "connect: %s\n", err ? herd_error_message(err) : strerror(-r));
		return 1;
	}
	r = herd_call(conn, "add", args, 10 * 1000000, &result);
	json_decref(args);
	if (r < 0 || json_integer_value(result) != 5) {
		fprintf(stderr, "add(2, 3) failed: %s\n", strerror(-r));
		return 1;
	}
	json_decref(result);
	herd_conn_unref(conn);
	return 0;
}

static int child_status = -1;

static void
on_child(struct ev_loop *loop, ev_child *w, int revents)
{
	child_status = w->rstatus;
	ev_break(loop, EVBREAK_ALL);
}

static void
on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
	fprintf(stderr, "no answer from the client within the deadline\n");
	ev_break(loop, EVBREAK_ALL);
}

int
main(int argc, char **argv)
{
	struct ev_loop *loop = ev_default_loop(0);
	herd_server *srv = NULL;
	ev_child child_w;
	ev_timer deadline;
	pid_t pid;
	int r;

	if (argc != 2) {
		fprintf(stderr, "usage: %s SOCKET\n", argv[0]);
		return 2;
	}
	printf("libherd %s\n", herd_version());

	r = herd_serve(loop, &adder, argv[1], NULL, NULL, &srv);
	if (r < 0) {
		fprintf(stderr, "herd_serve: %s\n", strerror(-r));
		return 1;
	}

	pid = fork();
	if (pid < 0)
		return 1;
	if (pid == 0)
		_exit(client(argv[1]));

	ev_child_init(&child_w, on_child, pid, 0);
	ev_child_start(loop, &child_w);
	ev_timer_init(&deadline, on_deadline, 30.0, 0.0);
	ev_timer_start(loop, &deadline);
	ev_run(loop, 0);

	if (child_status < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	herd_server_close(srv);
	herd_server_unref(srv);
	ev_loop_destroy(loop);
	if (child_status < 0 || !WIFEXITED(child_status) || WEXITSTATUS(child_status) != 0)
		return 1;
	printf("add(2, 3) = 5 through the installed libherd\n");
	return 0;
}
