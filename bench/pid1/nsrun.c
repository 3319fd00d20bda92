/* nsrun [-t SECONDS] [-c CGROUP_PROCS_FILE] [-q] -- INIT ARGS...
 *
 * Starts INIT as PID 1 of new PID + mount namespaces (see common.h), prints
 * "pid <host pid>" on stdout as soon as it is started, waits for it and
 * prints "exit N" or "signal N". -q sends the init's stdio to /dev/null,
 * -t bounds the whole thing (default 60 s; the init is SIGKILLed with us).
 * Used by the harness for the memory probe and the exit-code table. */
#include "common.h"

int main(int argc, char **argv)
{
    struct spawn_opts o = {.stderr_fd = -1};
    unsigned limit = 60;
    int i = 1;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            i++;
            break;
        } else if (!strcmp(argv[i], "-t") && i + 1 < argc) {
            limit = (unsigned)atoi(argv[++i]);
        } else if (!strcmp(argv[i], "-c") && i + 1 < argc) {
            o.cgroup_procs = argv[++i];
        } else if (!strcmp(argv[i], "-q")) {
            o.devnull_stdio = 1;
        } else {
            fprintf(stderr, "nsrun: bad argument %s\n", argv[i]);
            return 2;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "usage: nsrun [-t S] [-c FILE] [-q] -- CMD ARGS...\n");
        return 2;
    }
    guard(limit);
    pid_t pid = spawn_pid1(&argv[i], &o);
    if (pid < 0)
        die("clone");
    printf("pid %d\n", (int)pid);
    fflush(stdout);
    int st = reap(pid);
    if (st < 0)
        die("waitpid");
    if (WIFEXITED(st))
        printf("exit %d\n", WEXITSTATUS(st));
    else
        printf("signal %d\n", WTERMSIG(st));
    return 0;
}
