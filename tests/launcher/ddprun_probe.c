/* ddprun_probe.c: the program the launcher tests run under ddprun, one behaviour per mode.
 *
 *   ddprun_probe env [tag...]           prints what the launcher set, exits 0
 *   ddprun_probe fail RANK CODE [tag]   rank RANK exits CODE after 0.5 s; the others sleep 600 s
 *   ddprun_probe kill RANK [tag]        rank RANK SIGKILLs itself after 0.5 s; the others sleep
 *   ddprun_probe restart [tag]          attempt 0: rank 1 exits 5, rank 0 sleeps; later: exit 0
 *   ddprun_probe sleep [tag]            prints "rank R sleeping", sleeps 600 s
 *
 * The trailing tag words are ignored; tests put a unique one there to find leftover processes
 * with pgrep -f. Output lines are flushed at once, as a training program's logs would be. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *env(const char *name) {
  const char *v = getenv(name);
  return v ? v : "unset";
}

static int rank(void) { return atoi(env("RANK")); }

static void nap_ms(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int sleep_long(void) {
  printf("rank %d sleeping\n", rank());
  fflush(stdout);
  for (int i = 0; i < 600; i++) sleep(1);
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 2) {
    fprintf(stderr, "usage: ddprun_probe env|fail|kill|restart|sleep ...\n");
    return 2;
  }
  const char *mode = argv[1];
  if (!strcmp(mode, "env")) {
    printf("probe rank=%s local_rank=%s world=%s local_world=%s restart=%s omp=%s "
           "ember_threads=%s coll_timeout=%s\n",
           env("RANK"), env("LOCAL_RANK"), env("WORLD_SIZE"), env("LOCAL_WORLD_SIZE"),
           env("EMBER_RESTART_COUNT"), env("OMP_NUM_THREADS"), env("EMBER_THREADS"),
           env("EMBER_COLL_TIMEOUT"));
    fprintf(stderr, "probe rank=%s to stderr\n", env("RANK"));
    return 0;
  }
  if (!strcmp(mode, "fail") && argc >= 4) {
    if (rank() != atoi(argv[2])) return sleep_long();
    nap_ms(500);
    printf("rank %d: something went wrong\n", rank());
    fprintf(stderr, "rank %d failing with code %d\n", rank(), atoi(argv[3]));
    return atoi(argv[3]);
  }
  if (!strcmp(mode, "kill") && argc >= 3) {
    if (rank() != atoi(argv[2])) return sleep_long();
    nap_ms(500);
    printf("rank %d killing itself\n", rank());
    fflush(stdout);
    raise(SIGKILL);
    return 0;
  }
  if (!strcmp(mode, "restart")) {
    int attempt = atoi(env("EMBER_RESTART_COUNT"));
    printf("rank %d attempt %d\n", rank(), attempt);
    if (attempt == 0 && rank() == 1) {
      nap_ms(300);
      printf("rank 1 fails on attempt 0\n");
      return 5;
    }
    if (attempt == 0) return sleep_long();
    printf("rank %d resumed and finished\n", rank());
    return 0;
  }
  if (!strcmp(mode, "sleep")) return sleep_long();
  fprintf(stderr, "ddprun_probe: unknown mode '%s'\n", mode);
  return 2;
}
