/* siglat -n N -f FIFO [-g GAP_US] [-t SECONDS] [-c CPU] -- INIT ARGS... sigchild @FIFO@
 *
 * Signal-forwarding latency. Starts INIT as PID 1 of fresh namespaces
 * (common.h) with sigchild as its child ("@FIFO@" in the arguments is
 * replaced by FIFO), waits for sigchild's ready record, then N times:
 * sleep GAP_US (±50%, default 1000 µs, so the init is back in its idle
 * wait), t0 = CLOCK_MONOTONIC, kill(init, SIGUSR1), read the child's
 * handler timestamp t1 from FIFO; latency = t1 - t0. Finally the same once
 * with SIGTERM (the stop signal; the child exits on it) and then waits for
 * the init to exit. Output lines: "USR1 <ns>" ..., "TERM <ns>",
 * "EXIT <ns from TERM sent to init reaped> <wait status>".
 * Works the same without an init (CMD = sigchild itself as PID 1).
 * The init's stdout/stderr go to a pipe drained by a thread (see
 * log_drain_start in common.h), like a runtime's log shim.
 * -c CPU pins the driver, and so the init and its child, to one CPU: then no
 * wake-up has to cross CPUs and what is left is the init's own work. */
#define WANT_LOG_DRAIN
#include "common.h"
#include <poll.h>
#include <sys/stat.h>

struct rec {
    int64_t sig;
    uint64_t ns;
};

static int read_rec(int fd, struct rec *r, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n = poll(&p, 1, timeout_ms);
    if (n <= 0)
        return -1;
    return read(fd, r, sizeof *r) == sizeof *r ? 0 : -1;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

int main(int argc, char **argv)
{
    int n = 200;
    long gap = 1000;
    unsigned limit = 60;
    const char *fifo = NULL;
    int cpu = -1;
    int i = 1;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            i++;
            break;
        } else if (!strcmp(argv[i], "-n") && i + 1 < argc) {
            n = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "-g") && i + 1 < argc) {
            gap = atol(argv[++i]);
        } else if (!strcmp(argv[i], "-t") && i + 1 < argc) {
            limit = (unsigned)atoi(argv[++i]);
        } else if (!strcmp(argv[i], "-c") && i + 1 < argc) {
            cpu = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "-f") && i + 1 < argc) {
            fifo = argv[++i];
        } else {
            fprintf(stderr, "siglat: bad argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!fifo || i >= argc) {
        fprintf(stderr, "usage: siglat -n N -f FIFO [-g GAP_US] -- CMD... @FIFO@\n");
        return 2;
    }
    for (int k = i; k < argc; k++)
        if (!strcmp(argv[k], "@FIFO@"))
            argv[k] = (char *)fifo;
    guard(limit);
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0)
            die("sched_setaffinity");
    }
    unlink(fifo);
    if (mkfifo(fifo, 0600) != 0)
        die("mkfifo");
    int fd = open(fifo, O_RDWR | O_CLOEXEC); /* never blocks, never EOF */
    if (fd < 0)
        die("open fifo");
    struct spawn_opts o = {.stderr_fd = log_drain_start()};
    pid_t pid = spawn_pid1(&argv[i], &o);
    if (pid < 0)
        die("clone");
    close(o.stderr_fd);
    struct rec r;
    int rc = 0;
    if (read_rec(fd, &r, 10000) != 0 || r.sig != 0) {
        fprintf(stderr, "siglat: child never became ready\n");
        rc = 3;
        goto out;
    }
    sleep_us(20000);
    srandom((unsigned)pid);
    for (int k = 0; k < n; k++) {
        sleep_us(gap / 2 + random() % (gap + 1));
        uint64_t t0 = now_ns();
        kill(pid, SIGUSR1);
        if (read_rec(fd, &r, 2000) != 0 || r.sig != SIGUSR1) {
            fprintf(stderr, "siglat: SIGUSR1 #%d not seen by the child\n", k);
            rc = 4;
            goto out;
        }
        printf("USR1 %lld\n", (long long)(r.ns - t0));
    }
    sleep_us(gap);
    uint64_t t0 = now_ns();
    kill(pid, SIGTERM);
    if (read_rec(fd, &r, 2000) != 0 || r.sig != SIGTERM) {
        fprintf(stderr, "siglat: SIGTERM not seen by the child\n");
        rc = 5;
        goto out;
    }
    printf("TERM %lld\n", (long long)(r.ns - t0));
    {
        int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
        struct pollfd p = {.fd = pfd, .events = POLLIN};
        if (pfd >= 0 && poll(&p, 1, 5000) == 1) {
            uint64_t t1 = now_ns();
            int st = reap(pid);
            printf("EXIT %llu %d\n", (unsigned long long)(t1 - t0), st);
            pid = 0;
        } else {
            fprintf(stderr, "siglat: init still running 5 s after SIGTERM\n");
            rc = 6;
        }
        if (pfd >= 0)
            close(pfd);
    }
out:
    if (pid) {
        kill(pid, SIGKILL);
        reap(pid);
    }
    close(fd);
    unlink(fifo);
    log_drain_end();
    return rc;
}
