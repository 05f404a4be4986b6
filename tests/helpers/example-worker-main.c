/* SPDX-License-Identifier: MIT */
/* rpc-example-worker: the example worker type as an executable (standalone or under herdd). */
#include "example-worker.h"

int
main(int argc, char **argv)
{
	return herd_worker_main(&example_worker_type, argc, argv);
}
