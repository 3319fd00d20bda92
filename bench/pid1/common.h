/* Shared by the bench/pid1 drivers: start a command as PID 1 of a fresh PID
 * namespace (and mount namespace with its own /proc and an empty /run), the
 * way a container runtime would, so that every init runs under the same
 * conditions: it is PID 1, orphans are reparented to it, and lastcall's
 * default control socket (/run/lastcall.sock) lands in a private tmpfs.
 *
 * Clean-up: the started process gets PR_SET_PDEATHSIG(SIGKILL), so if the
 * driver dies the init dies, and with the init (PID 1 of its namespace) the
 * kernel kills everything else in that namespace. Every driver also calls
 * guard() first, so it dies with its own parent (the harness) and after a
 * hard time limit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "%s: %s\n", what, strerror(errno));
    exit(99);
}

/* Die with the parent (the harness) and after `seconds` whatever happens. */
static void guard(unsigned seconds)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        _exit(98);
    alarm(seconds);
}

struct spawn_opts {
    const char *cgroup_procs; /* if set, the child joins this cgroup before exec */
    int devnull_stdio;        /* stdin/stdout/stderr to /dev/null */
    int stderr_fd;            /* if >= 0, dup'ed onto stdout and stderr of the child */
};

/* clone() into new PID + mount namespaces; the child becomes PID 1 there and
 * execs argv. Returns the child's PID as seen by the caller. */
static pid_t spawn_pid1(char *const argv[], const struct spawn_opts *o)
{
    pid_t pid = (pid_t)syscall(SYS_clone, CLONE_NEWPID | CLONE_NEWNS | SIGCHLD, NULL, NULL, NULL, NULL);
    if (pid != 0)
        return pid;
    /* child: PID 1 of the new namespace. Only raw syscalls until exec. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (o && o->cgroup_procs) {
        int fd = open(o->cgroup_procs, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1)
            _exit(97);
        close(fd);
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        _exit(96);
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
        _exit(96);
    if (mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4m") != 0)
        _exit(96);
    if (o && o->devnull_stdio) {
        int fd = open("/dev/null", O_RDWR);
        dup2(fd, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        if (fd > 2)
            close(fd);
    }
    if (o && o->stderr_fd >= 0) {
        dup2(o->stderr_fd, 1);
        dup2(o->stderr_fd, 2);
    }
    /* alarm() timers are not inherited across fork/clone, nothing to reset. */
    execv(argv[0], argv);
    _exit(errno == ENOENT ? 127 : 126);
}

/* Reap `pid`, return its raw wait status (or -1). */
static int reap(pid_t pid)
{
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, 0);
        if (r == pid)
            return st;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

#ifdef WANT_LOG_DRAIN
/* The init's stdout/stderr as a container runtime's log shim sees them: a
 * pipe that a lean reader drains at once. The reader is a thread of the
 * driver that keeps the first 8 KiB in memory (printed to the driver's
 * stderr at the end, by log_drain_end) so that neither the harness nor a
 * terminal sits in the measured path. */
#include <pthread.h>
static struct {
    int rfd;
    pthread_t th;
    char buf[8192];
    size_t len, total;
} drain;

static void *drain_main(void *arg)
{
    (void)arg;
    char tmp[4096];
    ssize_t k;
    while ((k = read(drain.rfd, tmp, sizeof tmp)) != 0) {
        if (k < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        size_t room = sizeof drain.buf - drain.len;
        size_t n = (size_t)k < room ? (size_t)k : room;
        memcpy(drain.buf + drain.len, tmp, n);
        drain.len += n;
        drain.total += (size_t)k;
    }
    return NULL;
}

/* Returns the write end, to give to spawn_opts.stderr_fd (and close after spawning). */
static int log_drain_start(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        die("pipe");
    drain.rfd = p[0];
    if (pthread_create(&drain.th, NULL, drain_main, NULL) != 0)
        die("pthread_create");
    return p[1];
}

/* Call once every writer is gone (the init reaped): waits for EOF, prints what was kept. */
static void log_drain_end(void)
{
    pthread_join(drain.th, NULL);
    close(drain.rfd);
    if (drain.len) {
        fwrite(drain.buf, 1, drain.len, stderr);
        if (drain.total > drain.len)
            fprintf(stderr, "[... %zu more bytes]\n", drain.total - drain.len);
    }
}
#endif
