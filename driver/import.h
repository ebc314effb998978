/*
 * import.h - `mpk import`: a Hugging Face config.json to a .mpk model.
 *
 * Reads the config.json of a LlamaForCausalLM or Qwen3ForCausalLM checkpoint
 * and writes a model that imports std/llama.mpk or std/qwen3.mpk, in the
 * style of the examples (examples/NAME.mpk). See import.c for what is read and refused.
 */
#ifndef MPK_IMPORT_H
#define MPK_IMPORT_H

#include <stdio.h>

/* The exit statuses of mpk_import (and of `mpk import`). */
enum {
    MPK_IMPORT_OK = 0,
    MPK_IMPORT_BAD_CONFIG = 1,  /* not valid JSON, invalid or unsupported */
    MPK_IMPORT_IO = 2,          /* the config cannot be read, or OUT written */
};

/* Converts config_path ("-" is standard input; a directory: the
 * checkpoint's config.json, generation_config.json, weights and tokenizer
 * files, see import.c) to a model written to
 * out_path, or to standard output when out_path is NULL or "-". A file is
 * replaced atomically (a temporary file in its directory, then rename), and
 * only once the whole config has been read and checked: on any error the
 * previous contents of out_path are left as they were. Problems are printed
 * on err, one line each, as "FILE: problem". */
int mpk_import(const char *config_path, const char *out_path, FILE *err);

#endif
