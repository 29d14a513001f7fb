/* cdi.h: `xmemctl cdi generate` (cdi.c). */
#pragma once

/* ARGV[0] is "cdi". SOCKET: memd's socket the hooks use (NULL: their
 * default). Returns the exit status; errors are one line on stderr. */
int cdi_main(int argc, char **argv, const char *socket);
