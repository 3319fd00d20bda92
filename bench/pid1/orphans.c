/* orphans N OUT_FIFO IN_FIFO
 *
 * The child for the reaping test (run under the init). Writes a ready
 * record to OUT_FIFO, waits for a byte on IN_FIFO, then:
 *   t_spawn = now; fork an intermediate that forks N children, each of which
 *   blocks on a barrier pipe; the intermediate exits, is reaped here, and
 *   the N children are now orphans reparented to PID 1 (the init);
 *   t_release = now; close the barrier: all N children exit at once and
 *   become zombies that only the init can reap.
 * Writes {1, t_spawn}, {2, t_release} (or {-1, errno} on failure) and then
 * sleeps until killed. Records are 16 bytes: {int64 kind, uint64 value}. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct rec {
    int64_t kind;
    uint64_t v;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    int n = atoi(argv[1]);
    int out = open(argv[2], O_WRONLY | O_CLOEXEC);
    int in = open(argv[3], O_RDONLY | O_CLOEXEC);
    if (out < 0 || in < 0)
        return 3;
    struct rec r = {0, 0};
    if (write(out, &r, sizeof r) != sizeof r)
        return 4;
    char go;
    if (read(in, &go, 1) != 1)
        return 5;

    int bar[2];
    if (pipe(bar) != 0)
        return 6;
    uint64_t t_spawn = now_ns();
    pid_t im = fork();
    if (im == 0) {
        for (int i = 0; i < n; i++) {
            pid_t c = fork();
            if (c == 0) {
                close(bar[1]);
                char b;
                while (read(bar[0], &b, 1) < 0 && errno == EINTR)
                    ;
                _exit(0);
            }
            if (c < 0)
                _exit(1);
        }
        _exit(0);
    }
    int st = -1;
    if (im < 0 || waitpid(im, &st, 0) != im || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        struct rec e = {-1, (uint64_t)st};
        write(out, &e, sizeof e);
        close(bar[1]);
        for (;;)
            pause();
    }
    uint64_t t_release = now_ns();
    close(bar[1]);
    struct rec a = {1, t_spawn}, b = {2, t_release};
    write(out, &a, sizeof a);
    write(out, &b, sizeof b);
    for (;;)
        pause();
}
