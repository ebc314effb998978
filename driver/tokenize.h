/*
 * tokenize.h - `mpk tokenize` and `mpk detokenize` (tokenize.c). Each takes
 * the arguments after the command name (argv[0] is the command) and
 * returns the exit status.
 */
#ifndef MPK_TOKENIZE_H
#define MPK_TOKENIZE_H

int mpk_tokenize_cmd(int argc, char **argv);
int mpk_detokenize_cmd(int argc, char **argv);

#endif
