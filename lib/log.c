/* log.c: stderr/journal logging, one line per event. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <pthread.h>
#include <time.h>
#include <systemd/sd-journal.h>

#include "log.h"

static const char *log_ident = "xmem";
static enum log_target log_target = LOG_TARGET_STDERR;
static int log_max_level = LOG_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {
        "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
};

void log_setup(const char *ident, enum log_target target, int max_level)
{
        if (ident)
                log_ident = ident;
        if (target == LOG_TARGET_AUTO)
                target = getenv("JOURNAL_STREAM") ? LOG_TARGET_JOURNAL : LOG_TARGET_STDERR;
        log_target = target;
        log_max_level = max_level;
}

void log_set_max_level(int level)
{
        log_max_level = level;
}

int log_get_max_level(void)
{
        return log_max_level;
}

int log_level_from_string(const char *s)
{
        char *end;
        long v;

        if (!s || !*s)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
                if (strcasecmp(s, level_names[i]) == 0)
                        return (int)i;
        if (strcasecmp(s, "error") == 0)
                return LOG_ERR;
        errno = 0;
        v = strtol(s, &end, 10);
        if (errno || *end || v < 0 || v > LOG_DEBUG)
                return -EINVAL;
        return (int)v;
}

int log_internal(int level, int error, const char *file, int line, const char *fmt, ...)
{
        char buf[1024];
        va_list ap;
        int saved = errno;

        if (level > log_max_level)
                return error;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        /* one event, one line: fold any newline a message carried in */
        for (char *p = buf; *p; p++)
                if (*p == '\n')
                        *p = ' ';
        if (error < 0) {
                size_t n = strlen(buf);
                snprintf(buf + n, sizeof(buf) - n, ": %s", strerror(-error));
        }

        if (log_target == LOG_TARGET_JOURNAL) {
                sd_journal_send("MESSAGE=%s", buf, "PRIORITY=%i", level, "SYSLOG_IDENTIFIER=%s",
                                log_ident, "CODE_FILE=%s", file, "CODE_LINE=%i", line,
                                error < 0 ? "ERRNO=%i" : NULL, -error, NULL);
        } else {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                pthread_mutex_lock(&log_lock);
                fprintf(stderr, "%s[%d] %ld.%03ld %s: %s\n", log_ident, (int)getpid(),
                        (long)ts.tv_sec, ts.tv_nsec / 1000000L,
                        level_names[level & 7], buf);
                pthread_mutex_unlock(&log_lock);
        }
        errno = saved;
        return error;
}
