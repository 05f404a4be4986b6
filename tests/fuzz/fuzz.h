/* SPDX-License-Identifier: MIT */
/* A fuzz target's entry point, shared by libFuzzer and the corpus replay test. */
#ifndef HERD_FUZZ_H
#define HERD_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
