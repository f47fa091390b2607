/*
 * cairn-shim: what stays beside one run of one container, and that container's first process.
 *
 * Why not Python: a Python supervisor costs ~9.5 MiB PSS per instance even with the standard
 * library alone (measured; cairn's earlier Python shim cost ~19 MiB). This program costs well
 * under 1 MiB (bench/RESULTS.md). Why not conmon: Debian's conmon (2.1.6) cannot hand the
 * container a file descriptor (no --preserve-fds), so secret values could reach the container
 * only through the OCI spec file on disk or conmon's attach socket; and its log is not the
 * format, rotation and redaction cairn's logs promise. What this does is conmon's core, small:
 *
 *   cairn-shim run RUNC ROOT BUNDLE ID RUNDIR LOG MAX_BYTES KEEP
 *     Reads the secret environment (NUL-separated NAME=VALUE) on stdin, detaches (double fork,
 *     new session), becomes a child subreaper and runs `runc run --detach --preserve-fds 1`:
 *     the secrets travel on fd 3 (a pipe) to the container's first process, never argv, never a
 *     file, never this process's environment. runc exits once the container runs; the container
 *     is then this process's child. Its stdout and stderr (pipes) go line by line, timestamped,
 *     with every secret value masked, into LOG (rotated at MAX_BYTES, KEEP old files). When the
 *     container ends, RUNDIR/exit holds its exit code (128+signal when signalled) and this exits.
 *     RUNDIR/shim.pid names this process; runc writes RUNDIR/pid; runc's own log is RUNDIR/runc.log.
 *
 *   cairn-shim init COMMAND [ARG...]
 *     Inside the container (bind-mounted read-only at /.cairn/init, static, so any image runs
 *     it): adds the NAME=VALUE pairs read from fd 3 to the environment, closes fd 3 and execs
 *     COMMAND, which thus keeps pid 1 (the app is pid 1 in its container, as on Kubernetes).
 *     `runc exec` starts exec commands, hooks and shells through it the same way.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE 16384
#define MAX_SECRETS 256
#define MASK "***"
#define MIN_SECRET 3 /* cairn.redaction.MIN_LENGTH: shorter values would mask ordinary text */

static char *read_all(int fd, size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) return NULL;
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) { free(buf); return NULL; }
        if (got == 0) break;
        n += (size_t)got;
        if (n == cap) { cap *= 2; buf = realloc(buf, cap + 1); }
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* ------------------------------------------------------------------------------------- init */
static int init_main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: cairn-shim init COMMAND [ARG...]\n"); return 127; }
    size_t len = 0;
    char *env = read_all(3, &len);
    if (env == NULL) { fprintf(stderr, "cairn init: cannot read the environment on fd 3: %s\n", strerror(errno)); return 127; }
    close(3);
    for (size_t i = 0; i < len;) {
        char *pair = env + i;
        size_t n = strlen(pair);
        if (n && strchr(pair, '=')) putenv(pair); /* the buffer lives until exec */
        i += n + 1;
    }
    execvp(argv[2], argv + 2);
    fprintf(stderr, "cannot start %s: %s\n", argv[2], strerror(errno));
    return errno == ENOENT ? 127 : 126;
}

/* ------------------------------------------------------------------------------------- logs */
struct log {
    const char *path;
    long max_bytes;
    int keep;
    FILE *fh;
    const char *secrets[MAX_SECRETS];
    size_t nsecrets;
};

static void log_open(struct log *log) {
    log->fh = fopen(log->path, "a");
    if (log->fh) chmod(log->path, 0600);
}

static void log_rotate(struct log *log) {
    char older[4096], newer[4096];
    fclose(log->fh);
    for (int i = log->keep; i >= 1; i--) {
        snprintf(older, sizeof older, "%s.%d", log->path, i);
        if (i == 1) snprintf(newer, sizeof newer, "%s", log->path);
        else snprintf(newer, sizeof newer, "%s.%d", log->path, i - 1);
        rename(newer, older); /* a missing one is fine */
    }
    if (log->keep < 1) unlink(log->path);
    log_open(log);
}

/* Writes text with every secret value replaced by MASK (leftmost, longest value first). */
static void write_masked(FILE *fh, const char *text, size_t len, struct log *log) {
    size_t i = 0;
    while (i < len) {
        size_t best = 0;
        for (size_t s = 0; s < log->nsecrets; s++) {
            size_t n = strlen(log->secrets[s]);
            if (n > best && n <= len - i && memcmp(text + i, log->secrets[s], n) == 0) best = n;
        }
        if (best) { fputs(MASK, fh); i += best; }
        else fputc(text[i++], fh);
    }
}

static void log_line(struct log *log, const char *stream, const char *text, size_t len) {
    if (!log->fh) return;
    struct timespec now;
    struct tm tm;
    char stamp[64];
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(log->fh, "%s.%06ldZ %s ", stamp, now.tv_nsec / 1000, stream);
    write_masked(log->fh, text, len, log);
    fputc('\n', log->fh);
    fflush(log->fh);
    if (ftell(log->fh) >= log->max_bytes) log_rotate(log);
}

struct stream {
    const char *name;
    int fd;
    char buf[MAX_LINE];
    size_t used;
};

/* Reads what the pipe has; writes each complete line (a longer one in MAX_LINE pieces). */
static void pump(struct stream *s, struct log *log) {
    ssize_t got = read(s->fd, s->buf + s->used, sizeof s->buf - s->used);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (got <= 0) {
        if (s->used) log_line(log, s->name, s->buf, s->used);
        s->used = 0;
        close(s->fd);
        s->fd = -1;
        return;
    }
    s->used += (size_t)got;
    size_t start = 0;
    for (size_t i = 0; i < s->used; i++) {
        if (s->buf[i] == '\n') {
            log_line(log, s->name, s->buf + start, i - start);
            start = i + 1;
        }
    }
    if (start == 0 && s->used == sizeof s->buf) { log_line(log, s->name, s->buf, s->used); start = s->used; }
    memmove(s->buf, s->buf + start, s->used - start);
    s->used -= start;
}

/* ------------------------------------------------------------------------------------- run */
static void write_file(const char *dir, const char *name, const char *text) {
    char path[4096], tmp[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return;
    ssize_t ignored = write(fd, text, strlen(text));
    (void)ignored;
    fsync(fd);
    close(fd);
    rename(tmp, path); /* readers see the whole record or none */
}

static int read_pid(const char *dir) {
    char path[4096], buf[32] = {0};
    snprintf(path, sizeof path, "%s/pid", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    return n > 0 ? atoi(buf) : -1;
}

static int code_of(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 255;
}

static int run_main(int argc, char **argv) {
    if (argc != 10) {
        fprintf(stderr, "usage: cairn-shim run RUNC ROOT BUNDLE ID RUNDIR LOG MAX_BYTES KEEP\n");
        return 2;
    }
    const char *runc = argv[2], *root = argv[3], *bundle = argv[4], *id = argv[5], *rundir = argv[6];
    struct log log = {.path = argv[7], .max_bytes = atol(argv[8]), .keep = atoi(argv[9])};
    size_t env_len = 0;
    char *env = read_all(0, &env_len);
    if (env == NULL) { perror("cairn-shim: reading the environment"); return 1; }
    if (env_len > 60000) { fprintf(stderr, "cairn-shim: secret environment over 60000 bytes\n"); return 1; }
    /* The secret values, for masking in the log: VALUE of each NAME=VALUE, and each line of a
     * multi-line VALUE (a PEM key), as cairn.redaction does: the log is written line by line. */
    for (size_t i = 0; i < env_len && log.nsecrets < MAX_SECRETS;) {
        char *pair = env + i, *eq = strchr(pair, '=');
        size_t n = strlen(pair);
        if (eq && strlen(eq + 1) >= MIN_SECRET) log.secrets[log.nsecrets++] = strdup(eq + 1);
        for (char *line = eq && strchr(eq + 1, '\n') ? eq + 1 : NULL; line && log.nsecrets < MAX_SECRETS;) {
            char *end = strchr(line, '\n');
            size_t len = end ? (size_t)(end - line) : strlen(line);
            char *start = line;
            while (len && (*start == ' ' || *start == '\t')) { start++; len--; }
            while (len && (start[len - 1] == ' ' || start[len - 1] == '\t' || start[len - 1] == '\r')) len--;
            if (len >= MIN_SECRET) log.secrets[log.nsecrets++] = strndup(start, len);
            line = end ? end + 1 : NULL;
        }
        i += n + 1;
    }

    /* Detach from the agent: it may die and restart, the container must not notice. */
    pid_t first = fork();
    if (first < 0) { perror("cairn-shim: fork"); return 1; }
    if (first > 0) return 0;
    setsid();
    if (fork() != 0) _exit(0);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 0);
    char line[64];
    snprintf(line, sizeof line, "%d\n", getpid());
    write_file(rundir, "shim.pid", line);
    log_open(&log);

    int secrets[2], out[2], err[2];
    if (pipe(secrets) || pipe(out) || pipe(err)) { write_file(rundir, "exit", "{\"exit_code\": 128, \"runc\": \"pipe failed\"}\n"); return 1; }
    ssize_t wrote = write(secrets[1], env, env_len); /* fits the pipe's buffer: checked above */
    close(secrets[1]);
    if (wrote != (ssize_t)env_len) { write_file(rundir, "exit", "{\"exit_code\": 128, \"runc\": \"secrets not passed\"}\n"); return 1; }
    memset(env, 0, env_len); /* the container has them now; the masks keep their own copies of the values */

    char pidfile[4096], runclog[4096];
    snprintf(pidfile, sizeof pidfile, "%s/pid", rundir);
    snprintf(runclog, sizeof runclog, "%s/runc.log", rundir);
    pid_t runc_pid = fork();
    if (runc_pid == 0) {
        dup2(out[1], 1);
        dup2(err[1], 2);
        dup2(secrets[0], 3);
        for (int fd = 4; fd < 1024; fd++) close(fd);
        execl(runc, "runc", "--root", root, "--log", runclog, "run", "--detach", "--preserve-fds", "1",
              "--pid-file", pidfile, "--bundle", bundle, id, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    close(secrets[0]);
    int status = 0;
    while (waitpid(runc_pid, &status, 0) < 0 && errno == EINTR) {}
    int container = read_pid(rundir);
    if (code_of(status) != 0 || container <= 0) {
        char record[128];
        snprintf(record, sizeof record, "{\"exit_code\": 128, \"runc\": \"run exited %d\"}\n", code_of(status));
        struct stream rest = {.name = "stderr", .fd = err[0]};
        while (rest.fd >= 0) pump(&rest, &log); /* runc's own error, for the log */
        write_file(rundir, "exit", record);
        return 1;
    }

    struct stream streams[2] = {{.name = "stdout", .fd = out[0]}, {.name = "stderr", .fd = err[0]}};
    int exited = 0, code = 0;
    struct timespec ended = {0};
    for (;;) {
        struct pollfd fds[2];
        int n = 0;
        for (int i = 0; i < 2; i++) {
            if (streams[i].fd >= 0) { fds[n].fd = streams[i].fd; fds[n].events = POLLIN; n++; }
        }
        if (n == 0 && exited) break;
        poll(fds, (nfds_t)n, 200);
        for (int i = 0, k = 0; i < 2; i++) {
            if (streams[i].fd < 0) continue;
            if (fds[k].revents) pump(&streams[i], &log);
            k++;
        }
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            if (pid == container) { exited = 1; code = code_of(status); clock_gettime(CLOCK_MONOTONIC, &ended); }
        }
        if (exited) { /* a process that escaped the pid namespace's end may hold a pipe: 2 s, no more */
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec - ended.tv_sec >= 2) break;
        }
    }
    char record[64];
    snprintf(record, sizeof record, "{\"exit_code\": %d}\n", code);
    write_file(rundir, "exit", record);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "init") == 0) return init_main(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "run") == 0) return run_main(argc, argv);
    fprintf(stderr, "usage: cairn-shim run ... | cairn-shim init COMMAND [ARG...]\n");
    return 2;
}
