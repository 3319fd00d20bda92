/* reap -n N -o OUT_FIFO -i IN_FIFO [-C CGROUP_ROOT] [-t SECONDS] -- INIT ARGS... orphans N @OUT@ @IN@
 *
 * Reaping a burst of N orphans. Starts INIT as PID 1 of fresh namespaces
 * (common.h) with `orphans` as its child ("@OUT@"/"@IN@" are replaced by the
 * FIFO paths; its stdout/stderr go to a pipe drained by a thread, like a
 * runtime's log shim). With -C (a pids-controller cgroup hierarchy such as
 * /sys/fs/cgroup/pids) the init is put in a new cgroup there and the number
 * of its tasks is read from pids.current, which counts zombies until they are
 * reaped; without it, the children listed in /proc/INIT/task/ * /children are
 * counted instead. Steps: wait for orphans to be ready, record the task count
 * (the base) and the init's CPU time, tell orphans to go, and poll (every
 * 200 µs) until the count is back to the base, i.e. every orphan has been
 * reaped. Output:
 *   SPAWN <ns from t_spawn to all orphans reparented>
 *   REAP  <ns from barrier release to none left>
 *   TOTAL <ns from t_spawn to none left>
 *   CPU   <ns the init ran meanwhile: sum of /proc/INIT/task/ * /schedstat>
 *   TICKS <utime+stime delta from /proc/INIT/stat, in ns (10 ms resolution)>
 */
#define WANT_LOG_DRAIN
#include "common.h"
#include <dirent.h>
#include <poll.h>
#include <sys/stat.h>

struct rec {
    int64_t kind;
    uint64_t v;
};

static char counter_path[512];
static pid_t init_pid;

static long read_long_file(const char *path)
{
    char buf[64];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t k = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (k <= 0)
        return -1;
    buf[k] = 0;
    return atol(buf);
}

/* tasks of the init's cgroup, or children of the init */
static long count_tasks(void)
{
    if (counter_path[0])
        return read_long_file(counter_path);
    char path[128];
    snprintf(path, sizeof path, "/proc/%d/task", (int)init_pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    long total = 0;
    struct dirent *e;
    static char buf[1 << 20];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p2[512];
        snprintf(p2, sizeof p2, "%s/%s/children", path, e->d_name);
        int fd = open(p2, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t k, off = 0;
        while ((k = read(fd, buf + off, sizeof buf - 1 - off)) > 0)
            off += k;
        close(fd);
        for (ssize_t j = 0; j < off; j++)
            if (buf[j] == ' ')
                total++;
    }
    closedir(d);
    return total;
}

/* the init's CPU time: schedstat of all its threads (ns), and utime+stime (ticks) */
static void init_cpu(uint64_t *sched_ns, uint64_t *ticks)
{
    char path[128], buf[1024];
    *sched_ns = 0;
    *ticks = 0;
    snprintf(path, sizeof path, "/proc/%d/task", (int)init_pid);
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p2[512];
        snprintf(p2, sizeof p2, "%s/%s/schedstat", path, e->d_name);
        int fd = open(p2, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t k = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (k > 0) {
            buf[k] = 0;
            *sched_ns += strtoull(buf, NULL, 10);
        }
    }
    if (d)
        closedir(d);
    snprintf(path, sizeof path, "/proc/%d/stat", (int)init_pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t k = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (k > 0) {
            buf[k] = 0;
            char *p = strrchr(buf, ')'); /* fields after comm: 3=state ... 14=utime 15=stime */
            unsigned long ut = 0, stt = 0;
            if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &stt) == 2)
                *ticks = ut + stt;
        }
    }
}

static int read_rec(int fd, struct rec *r, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) <= 0)
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
    int n = 10000;
    unsigned limit = 120;
    const char *outp = NULL, *inp = NULL, *cgroot = NULL;
    int i = 1;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            i++;
            break;
        } else if (!strcmp(argv[i], "-n") && i + 1 < argc) {
            n = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "-o") && i + 1 < argc) {
            outp = argv[++i];
        } else if (!strcmp(argv[i], "-i") && i + 1 < argc) {
            inp = argv[++i];
        } else if (!strcmp(argv[i], "-C") && i + 1 < argc) {
            cgroot = argv[++i];
        } else if (!strcmp(argv[i], "-t") && i + 1 < argc) {
            limit = (unsigned)atoi(argv[++i]);
        } else {
            fprintf(stderr, "reap: bad argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!outp || !inp || i >= argc) {
        fprintf(stderr, "usage: reap -n N -o OUT -i IN [-C CGROOT] -- CMD... @OUT@ @IN@\n");
        return 2;
    }
    for (int k = i; k < argc; k++) {
        if (!strcmp(argv[k], "@OUT@"))
            argv[k] = (char *)outp;
        else if (!strcmp(argv[k], "@IN@"))
            argv[k] = (char *)inp;
    }
    guard(limit);
    unlink(outp);
    unlink(inp);
    if (mkfifo(outp, 0600) != 0 || mkfifo(inp, 0600) != 0)
        die("mkfifo");
    int out = open(outp, O_RDWR | O_CLOEXEC), in = open(inp, O_RDWR | O_CLOEXEC);
    if (out < 0 || in < 0)
        die("open fifo");

    char cgdir[400] = "", procs[480] = "";
    struct spawn_opts o = {.stderr_fd = log_drain_start()};
    if (cgroot) {
        snprintf(cgdir, sizeof cgdir, "%s/lastcall-bench-%d", cgroot, (int)getpid());
        if (mkdir(cgdir, 0755) != 0)
            die("mkdir cgroup");
        snprintf(procs, sizeof procs, "%s/cgroup.procs", cgdir);
        snprintf(counter_path, sizeof counter_path, "%s/pids.current", cgdir);
        o.cgroup_procs = procs;
    }
    init_pid = spawn_pid1(&argv[i], &o);
    if (init_pid < 0)
        die("clone");
    close(o.stderr_fd);

    int rc = 0;
    struct rec r, a, b;
    if (read_rec(out, &r, 10000) != 0 || r.kind != 0) {
        fprintf(stderr, "reap: orphans never became ready\n");
        rc = 3;
        goto out;
    }
    sleep_us(50000);
    long base = count_tasks();
    uint64_t cpu0, tk0, cpu1, tk1;
    init_cpu(&cpu0, &tk0);
    if (write(in, "g", 1) != 1)
        die("write fifo");
    if (read_rec(out, &a, 60000) != 0 || a.kind != 1 || read_rec(out, &b, 60000) != 0 || b.kind != 2) {
        fprintf(stderr, "reap: orphans failed to spawn %d children\n", n);
        rc = 4;
        goto out;
    }
    uint64_t t1 = 0, deadline = now_ns() + 60ull * 1000000000ull;
    long c = -1;
    for (;;) {
        c = count_tasks();
        t1 = now_ns();
        if (c >= 0 && c <= base)
            break;
        if (t1 > deadline) {
            fprintf(stderr, "reap: %ld orphans still not reaped after 60 s\n", c - base);
            rc = 5;
            goto out;
        }
        sleep_us(200);
    }
    init_cpu(&cpu1, &tk1);
    long hz = sysconf(_SC_CLK_TCK);
    printf("SPAWN %llu\nREAP %llu\nTOTAL %llu\nCPU %llu\nTICKS %llu\n",
           (unsigned long long)(b.v - a.v), (unsigned long long)(t1 - b.v), (unsigned long long)(t1 - a.v),
           (unsigned long long)(cpu1 - cpu0), (unsigned long long)((tk1 - tk0) * (1000000000ull / (uint64_t)hz)));
out:
    kill(init_pid, SIGKILL);
    reap(init_pid);
    if (cgdir[0]) {
        for (int k = 0; k < 200 && rmdir(cgdir) != 0; k++)
            sleep_us(10000);
    }
    unlink(outp);
    unlink(inp);
    log_drain_end();
    return rc;
}
