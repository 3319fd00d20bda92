/* sigchild FIFO
 *
 * The child for the signal-latency test. Installs handlers for SIGUSR1 and
 * SIGTERM, opens FIFO for writing and writes a "ready" record; then, in the
 * handler, takes CLOCK_MONOTONIC as the first thing and writes
 * {signal number, timestamp} to FIFO (16 bytes: one atomic pipe write).
 * SIGTERM ends it with exit status 0 after the record is written.
 * Both signals are unblocked explicitly, in case an init leaks a mask. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct rec {
    int64_t sig;
    uint64_t ns;
};
static int fifo = -1;

static void on_signal(int sig)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    struct rec r = {sig, (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec};
    if (write(fifo, &r, sizeof r) != sizeof r)
        _exit(3);
    if (sig == SIGTERM)
        _exit(0);
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR1);
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    fifo = open(argv[1], O_WRONLY | O_CLOEXEC);
    if (fifo < 0)
        return 4;
    sigset_t un;
    sigemptyset(&un);
    sigaddset(&un, SIGUSR1);
    sigaddset(&un, SIGTERM);
    sigprocmask(SIG_UNBLOCK, &un, NULL);
    struct rec ready = {0, 0};
    if (write(fifo, &ready, sizeof ready) != sizeof ready)
        return 5;
    for (;;)
        pause();
}
