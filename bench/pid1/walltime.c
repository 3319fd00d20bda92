/* walltime [-n ROUNDS] [-w WARMUP] [-t SECONDS] [-P] -- CMD1 ARGS ::: CMD2 ARGS ::: ...
 *
 * Wall time of starting each command as PID 1 of fresh PID + mount
 * namespaces (see common.h), until it has been reaped. Commands are
 * interleaved run by run: every round runs each command once, in a freshly
 * shuffled order, so that background load hits all of them alike. WARMUP
 * rounds are run first and not recorded. Output on stdout, one line per
 * recorded run: "<command index> <nanoseconds> <exit status>".
 * -P: plain fork+exec without namespaces (for comparison only). */
#include "common.h"

#define MAXCMD 32

int main(int argc, char **argv)
{
    int rounds = 1000, warmup = 50, plain = 0;
    unsigned limit = 120;
    int i = 1;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            i++;
            break;
        } else if (!strcmp(argv[i], "-n") && i + 1 < argc) {
            rounds = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "-w") && i + 1 < argc) {
            warmup = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "-t") && i + 1 < argc) {
            limit = (unsigned)atoi(argv[++i]);
        } else if (!strcmp(argv[i], "-P")) {
            plain = 1;
        } else {
            fprintf(stderr, "walltime: bad argument %s\n", argv[i]);
            return 2;
        }
    }
    char **cmds[MAXCMD];
    int ncmd = 0;
    cmds[ncmd++] = &argv[i];
    for (; i < argc; i++) {
        if (!strcmp(argv[i], ":::")) {
            argv[i] = NULL;
            if (ncmd == MAXCMD) {
                fprintf(stderr, "walltime: too many commands\n");
                return 2;
            }
            cmds[ncmd++] = &argv[i + 1];
        }
    }
    guard(limit);

    int total = warmup + rounds;
    uint64_t *res = calloc((size_t)rounds * ncmd, sizeof *res);
    int *stat = calloc((size_t)rounds * ncmd, sizeof *stat);
    int order[MAXCMD];
    struct spawn_opts o = {.devnull_stdio = 1, .stderr_fd = -1};
    srandom(12345);
    for (int r = 0; r < total; r++) {
        for (int k = 0; k < ncmd; k++)
            order[k] = k;
        for (int k = ncmd - 1; k > 0; k--) {
            int j = (int)(random() % (k + 1)), t = order[k];
            order[k] = order[j];
            order[j] = t;
        }
        for (int k = 0; k < ncmd; k++) {
            int c = order[k];
            uint64_t t0 = now_ns();
            pid_t pid;
            if (plain) {
                pid = fork();
                if (pid == 0) {
                    int fd = open("/dev/null", O_RDWR);
                    dup2(fd, 0);
                    dup2(fd, 1);
                    dup2(fd, 2);
                    execv(cmds[c][0], cmds[c]);
                    _exit(127);
                }
            } else {
                pid = spawn_pid1(cmds[c], &o);
            }
            if (pid < 0)
                die("clone");
            int st = reap(pid);
            uint64_t t1 = now_ns();
            if (r >= warmup) {
                res[(size_t)(r - warmup) * ncmd + c] = t1 - t0;
                stat[(size_t)(r - warmup) * ncmd + c] = st;
            }
        }
    }
    for (int r = 0; r < rounds; r++)
        for (int c = 0; c < ncmd; c++)
            printf("%d %llu %d\n", c, (unsigned long long)res[(size_t)r * ncmd + c], stat[(size_t)r * ncmd + c]);
    return 0;
}
