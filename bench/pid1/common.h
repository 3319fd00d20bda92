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
    int stderr_fd;            /* if >= 0, dup'ed onto stderr of the child */
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
    if (o && o->stderr_fd >= 0)
        dup2(o->stderr_fd, 2);
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
