/* fuzz_ddprun_args: ddprun's command line. The input is the words of a command line, one per
 * line; a NUL byte ends them, and what follows is the content of a host file, which a
 * --hostfile/-f word names (whatever path it gave). The harness runs ddprun's own parse_args,
 * then the host list or host file parser and the --mpi-args splitter, as resolve() would; it never
 * resolves defaults (that reads the machine and may start nvidia-smi) and never starts anything.
 *
 * ddprun.c and util.c are included so that their static functions are reachable, with exit()
 * turned into a longjmp back here: a usage error (message, exit status 2) is an expected outcome.
 * Leak checking is off for this harness (make fuzz, ctest: -detect_leaks=0) because a usage
 * error leaves what the parse allocated, which the real process hands back to the OS at exit.
 * The same goes for a host file open at a usage error (dr_parse_hostfile): the harness closes
 * every descriptor an input left open, or after about a thousand such inputs every open fails
 * (the 30-minute campaign's one "crash", at 188,880 executions: fuzzutil.c's fopen, EMFILE). */
#define _GNU_SOURCE /* as ddprun.c and util.c define it: CPU_COUNT, getopt_long */
#include <fcntl.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

static jmp_buf fz_jmp;
static int fz_status;
__attribute__((noreturn)) static void fz_exit(int status) {
  fz_status = status;
  longjmp(fz_jmp, 1);
}

#define exit fz_exit
#define main ddprun_main
#include "../../launcher/ddprun.c"
#include "../../launcher/util.c"
#undef main
#undef exit

#include "fuzzutil.h"

static dr_options opts;

/* Descriptors below FD_SCAN that are open now: open[fd]. */
#define FD_SCAN 1024
static void open_fds(bool *open) {
  for (int fd = 0; fd < FD_SCAN; fd++) open[fd] = fcntl(fd, F_GETFD) != -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096) return 0;
  const uint8_t *nul = memchr(data, 0, size);
  size_t words = nul ? (size_t)(nul - data) : size;
  const char *hostfile = nul ? fz_write(0, "hostfile", nul + 1, size - words - 1) : NULL;
  char *text = fz_strndup(data, words);
  char *argv[65];
  int argc = fz_split_argv(text, "ddprun", argv, 65);
  static bool before[FD_SCAN], after[FD_SCAN];
  open_fds(before);
  if (setjmp(fz_jmp) == 0) {
    optind = 0; /* glibc: start getopt afresh */
    parse_args(argc, argv, &opts);
    int nhosts = 0;
    dr_host *hosts = NULL;
    if (opts.hosts) hosts = dr_parse_hosts(opts.hosts, "--hosts", &nhosts);
    if (opts.hostfile && hostfile) hosts = dr_parse_hostfile(hostfile, &nhosts);
    for (int i = 0; i < nhosts; i++) {
      if (!hosts[i].name[0] || hosts[i].slots < 0) abort();
      free(hosts[i].name);
    }
    free(hosts);
    dr_strv extra = {0};
    if (opts.mpi_args) dr_strv_split(&extra, opts.mpi_args);
    char *line = dr_strv_quoted(&opts.prog);
    free(line);
    dr_strv_free(&extra);
  } else if (fz_status != 0 && fz_status != DR_EXIT_USAGE) {
    abort(); /* only --help (0) and usage errors (2) end the parse */
  }
  open_fds(after);
  for (int fd = 0; fd < FD_SCAN; fd++) /* what a usage error left open (see the top) */
    if (after[fd] && !before[fd]) close(fd);
  dr_strv_free(&opts.prog);
  free(text);
  return 0;
}

/* The parse's allocations outlive a usage error (see the top): no leak check at exit either. */
const char *__asan_default_options(void) { return "detect_leaks=0"; }
