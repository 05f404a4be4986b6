/* SPDX-License-Identifier: MIT */
/*
 * herdd's entry point. Everything else is in herdd-core, which the fuzz
 * target (tests/fuzz/fuzz-dispatch.c) links with a fake spawn.c instead.
 */
#include "herdd.h"

int
main(int argc, char **argv)
{
	return main_run(argc, argv);
}
