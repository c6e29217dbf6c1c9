/* The start of the static installer executable (static/README.md, "Start-up: the private cache").
 *
 * The file is this launcher (linked statically: it runs on any x86-64 Linux, CentOS 7's glibc 2.17 included)
 * followed by a payload written by static/pack.py: a manifest of the PyInstaller onedir program and the
 * Debian glibc it needs, in its _internal/ (one line per directory and file, with each file's sha256), the
 * files compressed with zlib, and a trailer naming the sha256 of the manifest (the KEY).
 *
 * Every start: find <cache>/<KEY>, check that every file in it is exactly what the manifest lists (and that
 * nothing else is there), then exec its ld.so with the program. The first start (or one that finds the entry
 * missing, damaged or tampered with) unpacks the payload into <cache>/.tmp-*, checks each file's sha256
 * and renames the directory to <cache>/<KEY>: an interrupted unpack is never used.
 * <cache> is $K8S_OFFLINE_INSTALLER_CACHE, else $XDG_CACHE_HOME/k8s-offline-installer, else
 * $HOME/.cache/k8s-offline-installer (HOME unset: the home /etc/passwd names): created 0700, refused when
 * another user owns it, when group or others can write it, or when a directory above it can be changed by
 * other users. */

#define _GNU_SOURCE
/* SHA256_Init/Update/Final: the low-level digest (SHA-NI where the CPU has it) without linking OpenSSL 3's
 * provider machinery that SHA256() pulls in (5 MB instead of 0.8 MB) */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define NAME "installer-linux-amd64"
#define ENV_CACHE "K8S_OFFLINE_INSTALLER_CACHE"
#define MAGIC "K8SPAYL1"
#define TRAILER 96 /* magic[8], manifest offset, manifest length, blobs offset (u64 LE), key[64] */
#define LOADER "_internal/ld-linux-x86-64.so.2"
#define PROGRAM NAME
#define INTERNAL "_internal"
#define MAX_ENTRIES 4096
#define EXIT_LAUNCHER 2

struct item {
    char kind; /* 'd' or 'f' */
    unsigned mode;
    uint64_t size, zsize, offset; /* offset of the compressed bytes in the executable */
    char sha[65];
    char *path;
};

static struct item items[MAX_ENTRIES];
static int nitems;
static char key[65];
static const unsigned char *image; /* the whole executable, mapped */
static size_t image_size;
static char reason[PATH_MAX + 256]; /* why a cache entry was not used */
static char unpacking[PATH_MAX];      /* the .tmp-* directory being unpacked: removed when we give up */

static void remove_tree(const char *dir);

static void die(const char *hint, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, NAME ": error: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    if (hint)
        fprintf(stderr, "  hint: %s\n", hint);
    if (unpacking[0])
        remove_tree(unpacking);
    exit(EXIT_LAUNCHER);
}

static int why(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    return -1;
}

static void join(char *out, const char *a, const char *b)
{
    if (snprintf(out, PATH_MAX, "%s/%s", a, b) >= PATH_MAX)
        die(NULL, "path too long: %s/%s", a, b);
}

static uint64_t le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void sha_hex(const unsigned char *data, size_t n, char *out)
{
    SHA256_CTX c;
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256_Init(&c);
    SHA256_Update(&c, data, n);
    SHA256_Final(md, &c);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
}

static const char *bad_exe = "the executable is damaged: copy it again (bootstrap.sh checks it against the bundle)";

/* A relative path of plain components: no "", "." or ".." component. */
static int safe_path(const char *p)
{
    for (const char *c = p;; c++) {
        const char *end = strchrnul(c, '/');
        size_t n = (size_t)(end - c);
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return 0;
        if (!*end)
            return 1;
        c = end;
    }
}

/* Map our own file and read its trailer and manifest; the manifest must hash to the trailer's key. */
static void load_payload(void)
{
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0)
        die("mount /proc (the launcher reads its own file through /proc/self/exe)",
            "cannot open /proc/self/exe: %s", strerror(errno));
    if (fstat(fd, &st) != 0 || st.st_size < TRAILER)
        die(bad_exe, "cannot read the executable's payload");
    image_size = (size_t)st.st_size;
    image = mmap(NULL, image_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (image == MAP_FAILED)
        die(NULL, "cannot map the executable: %s", strerror(errno));
    const unsigned char *t = image + image_size - TRAILER;
    if (memcmp(t, MAGIC, 8) != 0)
        die(bad_exe, "no payload at the end of the executable");
    uint64_t moff = le64(t + 8), mlen = le64(t + 16), boff = le64(t + 24);
    if (moff > image_size || mlen > image_size - moff || boff > image_size - TRAILER)
        die(bad_exe, "the payload's trailer is inconsistent");
    memcpy(key, t + 32, 64);
    key[64] = 0;
    char got[65];
    sha_hex(image + moff, mlen, got);
    if (strcmp(got, key) != 0)
        die(bad_exe, "the payload's manifest does not match its key");
    char *text = strndup((const char *)image + moff, mlen);
    uint64_t at = boff;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        struct item *it = &items[nitems];
        int n = 0;
        if (nitems == MAX_ENTRIES)
            die(bad_exe, "too many files in the payload");
        if (sscanf(line, "%c %o %lu %lu %64s %n", &it->kind, &it->mode, &it->size, &it->zsize, it->sha, &n) != 5
            || n == 0 || (it->kind != 'd' && it->kind != 'f'))
            die(bad_exe, "bad manifest line: %s", line);
        it->path = line + n;
        if (!safe_path(it->path))
            die(bad_exe, "bad path in the manifest: %s", it->path);
        it->offset = at;
        if (it->kind == 'f') {
            if (it->zsize > image_size - TRAILER - at)
                die(bad_exe, "the payload is truncated at %s", it->path);
            at += it->zsize;
        }
        nitems++;
    }
}

/* The cache directory: ours alone, and so is every directory above it (or it is root's and sticky). */
static void check_private(const char *dir)
{
    const char *hint = "set " ENV_CACHE " to a directory of your own (created 0700 if missing)";
    struct stat st;
    char real[PATH_MAX];
    uid_t me = geteuid();
    if (lstat(dir, &st) != 0)
        die(hint, "cannot use %s as the installer's cache: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        die(hint, "%s is a symbolic link or not a directory: refusing to use it as the installer's cache", dir);
    if (st.st_uid != me)
        die("remove it, or set " ENV_CACHE " to a directory of your own",
            "%s is owned by uid %u, not by this user (uid %u): refusing to use it as the installer's cache", dir,
            (unsigned)st.st_uid, (unsigned)me);
    if (st.st_mode & 022)
        die("chmod 0700 it, or set " ENV_CACHE " to a directory of your own",
            "%s is group- or world-writable (mode %04o): refusing to use it as the installer's cache", dir,
            (unsigned)(st.st_mode & 07777));
    if (!realpath(dir, real))
        die(hint, "cannot resolve %s: %s", dir, strerror(errno));
    for (char *slash = strrchr(real, '/'); slash; slash = strrchr(real, '/')) {
        *slash = 0;
        const char *up = slash == real ? "/" : real;
        if (stat(up, &st) != 0)
            die(hint, "cannot check %s: %s", up, strerror(errno));
        if ((st.st_uid != 0 && st.st_uid != me) || ((st.st_mode & 022) && !(st.st_mode & S_ISVTX)))
            die(hint, "%s (above the installer's cache %s) can be changed by other users (owner uid %u, mode %04o): "
                "refusing to use the cache", up, dir, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
        if (slash == real)
            break;
    }
}

/* mkdir -p with mode 0700 for every directory it creates. */
static void make_dirs(const char *dir)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", dir);
    for (char *s = strchr(p + 1, '/');; s = strchr(s + 1, '/')) {
        if (s)
            *s = 0;
        if (mkdir(p, 0700) != 0 && errno != EEXIST)
            die("set " ENV_CACHE " to a directory of your own", "cannot create %s: %s", p, strerror(errno));
        if (!s)
            break;
        *s = '/';
    }
}

/* This user's home from /etc/passwd (a static program cannot use NSS): for `env -i`, cron, systemd units. */
static int passwd_home(char *out)
{
    FILE *f = fopen("/etc/passwd", "re");
    char line[4096];
    int found = 0;
    if (!f)
        return 0;
    while (!found && fgets(line, sizeof line, f)) {
        char *field[7], *p = line;
        int n = 0;
        line[strcspn(line, "\n")] = 0;
        for (char *tok = strsep(&p, ":"); tok && n < 7; tok = strsep(&p, ":"))
            field[n++] = tok;
        if (n == 7 && field[2][0] && strtoul(field[2], NULL, 10) == geteuid() && field[5][0] == '/') {
            snprintf(out, PATH_MAX, "%s/.cache/k8s-offline-installer", field[5]);
            found = 1;
        }
    }
    fclose(f);
    return found;
}

static void cache_dir(char *out)
{
    const char *env = getenv(ENV_CACHE), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (env && *env)
        snprintf(out, PATH_MAX, "%s", env);
    else if (xdg && xdg[0] == '/')
        snprintf(out, PATH_MAX, "%s/k8s-offline-installer", xdg);
    else if (home && home[0] == '/')
        snprintf(out, PATH_MAX, "%s/.cache/k8s-offline-installer", home);
    else if (!passwd_home(out))
        die("set " ENV_CACHE " (or HOME) to a directory of your own",
            "no cache directory for the unpacked installer: HOME is not set and /etc/passwd names no home "
            "for uid %u", (unsigned)geteuid());
    if (out[0] != '/')
        die(NULL, ENV_CACHE " must be an absolute path, not %s", out);
    if (strchr(out, ':'))
        die("set " ENV_CACHE " to a path without ':'", "the cache path %s contains ':'", out);
    for (size_t n = strlen(out); n > 1 && out[n - 1] == '/'; n--)
        out[n - 1] = 0;
    make_dirs(out);
    check_private(out);
}

static int sha_matches(const unsigned char *data, size_t n, const char *want)
{
    char got[65];
    sha_hex(data, n, got);
    return strcmp(got, want) == 0;
}

static int count_children(const char *path)
{
    DIR *d = opendir(path);
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static int expected_children(const char *rel) /* rel "" is the entry itself */
{
    size_t n = strlen(rel);
    int count = 0;
    for (int i = 0; i < nitems; i++) {
        const char *p = items[i].path;
        if (n == 0 ? !strchr(p, '/') : (!strncmp(p, rel, n) && p[n] == '/' && !strchr(p + n + 1, '/')))
            count++;
    }
    return count;
}

static int check_dir(const char *path, const char *rel)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return why("%s is missing", path);
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022))
        return why("%s is not a private directory of this user", path);
    if (count_children(path) != expected_children(rel))
        return why("%s holds files the executable does not carry", path);
    return 0;
}

/* 0 when the entry holds exactly the manifest's files (content, mode, owner) and nothing else. */
static int verify(const char *entry)
{
    char path[PATH_MAX];
    if (check_dir(entry, "") != 0)
        return -1;
    for (int i = 0; i < nitems; i++) {
        struct item *it = &items[i];
        struct stat st;
        join(path, entry, it->path);
        if (it->kind == 'd') {
            if (check_dir(path, it->path) != 0)
                return -1;
            continue;
        }
        int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return why("%s: %s", path, strerror(errno));
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 07777) != it->mode
            || (uint64_t)st.st_size != it->size) {
            close(fd);
            return why("%s is not the file the executable carries (type, owner, mode or size differ)", path);
        }
        int ok = 1;
        if (it->size > 0) {
            void *m = mmap(NULL, it->size, PROT_READ, MAP_PRIVATE, fd, 0);
            ok = m != MAP_FAILED && sha_matches(m, it->size, it->sha);
            if (m != MAP_FAILED)
                munmap(m, it->size);
        } else {
            ok = sha_matches((const unsigned char *)"", 0, it->sha);
        }
        close(fd);
        if (!ok)
            return why("%s does not match its sha256 in the executable", path);
    }
    return 0;
}

static int remove_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static void remove_tree(const char *dir)
{
    nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void write_file(const char *path, const struct item *it)
{
    unsigned char *buf = malloc(it->size ? it->size : 1);
    uLongf n = it->size;
    if (!buf)
        die(NULL, "out of memory unpacking %s", it->path);
    if (uncompress(buf, &n, image + it->offset, it->zsize) != Z_OK || n != it->size
        || !sha_matches(buf, n, it->sha))
        die(bad_exe, "%s in the payload does not match its sha256", it->path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        die(NULL, "cannot create %s: %s", path, strerror(errno));
    for (size_t done = 0; done < n;) {
        ssize_t w = write(fd, buf + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("free some space in the cache, or set " ENV_CACHE " elsewhere", "cannot write %s: %s", path,
                strerror(errno));
        done += (size_t)w;
    }
    if (fchmod(fd, it->mode) != 0 || close(fd) != 0)
        die(NULL, "cannot write %s: %s", path, strerror(errno));
    free(buf);
}

/* Remove what interrupted unpacks left behind (.tmp-*, .stale-*): only when older than ten minutes, so that
 * a start unpacking right now keeps its directory. */
static void remove_leftovers(const char *cache)
{
    DIR *d = opendir(cache);
    char path[PATH_MAX];
    time_t now = time(NULL);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));) {
        struct stat st;
        if (strncmp(e->d_name, ".tmp-", 5) && strncmp(e->d_name, ".stale-", 7))
            continue;
        join(path, cache, e->d_name);
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode) && st.st_mtime < now - 600)
            remove_tree(path);
    }
    closedir(d);
}

/* Unpack into a fresh private directory beside the entry, then rename it into place. */
static void unpack(const char *cache, const char *entry)
{
    char tmp[PATH_MAX], path[PATH_MAX], stale[PATH_MAX];
    remove_leftovers(cache);
    snprintf(tmp, sizeof tmp, "%s/.tmp-%.16s-XXXXXX", cache, key);
    if (!mkdtemp(tmp))
        die("set " ENV_CACHE " to a writable directory", "cannot create a directory in %s: %s", cache,
            strerror(errno));
    snprintf(unpacking, sizeof unpacking, "%s", tmp);
    for (int i = 0; i < nitems; i++) {
        join(path, tmp, items[i].path);
        if (items[i].kind == 'd') {
            if (mkdir(path, 0700) != 0 || chmod(path, items[i].mode) != 0)
                die(NULL, "cannot create %s: %s", path, strerror(errno));
        } else {
            write_file(path, &items[i]);
        }
    }
    for (int attempt = 0; attempt < 3; attempt++) {
        if (rename(tmp, entry) == 0) {
            unpacking[0] = 0;
            return;
        }
        if (errno != EEXIST && errno != ENOTEMPTY)
            die(NULL, "cannot rename %s to %s: %s", tmp, entry, strerror(errno));
        if (verify(entry) == 0) { /* another start unpacked it meanwhile */
            remove_tree(tmp);
            unpacking[0] = 0;
            return;
        }
        /* a damaged or altered entry: move it aside (rename is atomic), then remove it */
        snprintf(stale, sizeof stale, "%s/.stale-%.16s-XXXXXX", cache, key);
        if (!mkdtemp(stale))
            die(NULL, "cannot create a directory in %s: %s", cache, strerror(errno));
        if (rename(entry, stale) != 0 && errno != ENOENT)
            die("remove it (rm -rf), then start again", "cannot move the cache entry %s aside: %s", entry,
                strerror(errno));
        remove_tree(stale);
    }
    die("remove it (rm -rf), then start again", "cannot put the unpacked installer in place at %s", entry);
}

int main(int argc, char **argv)
{
    char cache[PATH_MAX], entry[PATH_MAX], loader[PATH_MAX], program[PATH_MAX], libpath[PATH_MAX];
    load_payload();
    cache_dir(cache);
    join(entry, cache, key);
    if (verify(entry) != 0) {
        struct stat st;
        if (lstat(entry, &st) == 0) /* present but not what we carry: say so, never run it */
            fprintf(stderr, NAME ": the cached copy is not used (%s): unpacking it again\n", reason);
        unpack(cache, entry);
    }
    join(loader, entry, LOADER);
    join(program, entry, PROGRAM);
    join(libpath, entry, INTERNAL);
    /* ld.so runs the program with Debian's glibc from the entry's _internal/ (ignoring the host's ld.so.cache).
     * PyInstaller's onedir bootloader then restarts itself through the same ld.so with LD_LIBRARY_PATH set to
     * _internal/, which static/rthook_env.py takes back out of the environment of child processes (ssh). */
    char **args = calloc((size_t)argc + 6, sizeof *args);
    int n = 0;
    args[n++] = loader;
    args[n++] = "--inhibit-cache";
    args[n++] = "--library-path";
    args[n++] = libpath;
    args[n++] = program;
    for (int i = 1; i < argc; i++)
        args[n++] = argv[i];
    args[n] = NULL;
    execv(loader, args);
    die("the cache must be on a file system that allows executing programs (not noexec): set " ENV_CACHE,
        "cannot run %s: %s", loader, strerror(errno));
    return EXIT_LAUNCHER;
}
