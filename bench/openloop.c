/* Open-loop HTTP/1.1 load generator: requests at a fixed rate, latency from each request's
 * intended send time (no coordinated omission), one JSON line of results on stdout.
 *
 *   openloop HOST PORT PATH RATE SECONDS [CONNECTIONS [WARMUP_SECONDS [TIMEOUT_SECONDS]]]
 *   openloop --histogram-test      # read latencies (ns, one a line) on stdin, print the JSON
 *
 * Request n is due at start + n / RATE. When it is due it goes out on an idle keep-alive
 * connection; when none is idle it waits in a queue and its latency still counts from the
 * time it was due. One thread, epoll, a timerfd armed for the next due time (timer slack set
 * to 1 us), CONNECTIONS connections opened before the clock starts. Responses must carry a
 * Content-Length (a chunked or unframed answer is an error and its connection is replaced).
 * Latencies of requests due in the first WARMUP_SECONDS are not recorded. Each request has a
 * deadline of TIMEOUT_SECONDS (default 2); one that misses it counts as a timeout and its
 * connection is replaced. The achieved rate is the recorded answers over the measured time,
 * or over the time until the last of them came back when that is longer (a backlog).
 *
 * The histogram is log-linear like HdrHistogram's: exact below 128 ns, then 64 buckets per
 * power of two (a bucket is at most 1/64 of its value wide); a percentile is reported as the
 * upper edge of the bucket that holds it, in microseconds.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define SUB_BITS 6
#define SUB_COUNT (1 << SUB_BITS)
#define BUCKETS (2 * SUB_COUNT + (64 - SUB_BITS - 1) * SUB_COUNT)
#define READ_SIZE 65536

static uint64_t hist[BUCKETS];
static uint64_t hist_count, hist_max;

static int bucket_of(uint64_t v) {
    if (v < 2 * SUB_COUNT) return (int)v;
    int e = 63 - __builtin_clzll(v); /* >= SUB_BITS + 1 */
    int shift = e - SUB_BITS;
    return 2 * SUB_COUNT + (e - SUB_BITS - 1) * SUB_COUNT + (int)((v >> shift) - SUB_COUNT);
}

static uint64_t bucket_top(int index) { /* the largest value that falls in this bucket */
    if (index < 2 * SUB_COUNT) return (uint64_t)index;
    int rest = index - 2 * SUB_COUNT;
    int e = rest / SUB_COUNT + SUB_BITS + 1;
    int shift = e - SUB_BITS;
    uint64_t low = ((uint64_t)(rest % SUB_COUNT + SUB_COUNT)) << shift;
    return low + ((uint64_t)1 << shift) - 1;
}

static void record(uint64_t ns) {
    hist[bucket_of(ns)]++;
    hist_count++;
    if (ns > hist_max) hist_max = ns;
}

static double percentile_us(double q) {
    if (!hist_count) return 0.0;
    uint64_t rank = (uint64_t)(q / 100.0 * (double)hist_count + 0.999999);
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (int i = 0; i < BUCKETS; i++) {
        seen += hist[i];
        if (seen >= rank) {
            uint64_t top = bucket_top(i);
            return (double)(top < hist_max ? top : hist_max) / 1000.0;
        }
    }
    return (double)hist_max / 1000.0;
}

static void print_latency(void) {
    printf("\"latency_us\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f}",
           percentile_us(50), percentile_us(90), percentile_us(99), percentile_us(99.9),
           (double)hist_max / 1000.0);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* --- connections ----------------------------------------------------------------------- */

struct conn {
    int fd;
    int busy;           /* a request is outstanding */
    uint64_t due;       /* its intended send time */
    size_t have;        /* bytes of the response read so far */
    long need;          /* total response bytes once the head is parsed, else -1 */
    char buf[READ_SIZE];
};

static struct sockaddr_in target;
static int epfd;
static char request[1024];
static size_t request_len;

static int open_conn(struct conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    c->fd = fd;
    c->busy = 0;
    c->have = 0;
    c->need = -1;
    return 0;
}

static void close_conn(struct conn *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->busy = 0;
}

/* The total length of the response in buf (head + Content-Length), 0 if the head is not
 * complete yet, -1 if the response has no usable framing. *status gets the status code. */
static long parse_head(const char *buf, size_t len, int *status) {
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end) return len >= READ_SIZE ? -1 : 0;
    if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0) return -1;
    *status = atoi(buf + 9);
    long head = end - buf + 4;
    const char *line = memchr(buf, '\n', (size_t)head) + 1;
    while (line < end) {
        if (strncasecmp(line, "content-length:", 15) == 0) return head + atol(line + 15);
        if (strncasecmp(line, "transfer-encoding:", 18) == 0) return -1;
        line = memchr(line, '\n', (size_t)(end + 2 - line)) + 1;
    }
    return (*status >= 100 && *status < 200) || *status == 204 || *status == 304 ? head : -1;
}

static int histogram_test(void) {
    unsigned long long v;
    while (scanf("%llu", &v) == 1) record(v);
    printf("{\"recorded\":%llu,", (unsigned long long)hist_count);
    print_latency();
    printf("}\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--histogram-test") == 0) return histogram_test();
    if (argc < 6) {
        fprintf(stderr, "usage: %s HOST PORT PATH RATE SECONDS [CONNECTIONS [WARMUP [TIMEOUT]]]\n",
                argv[0]);
        return 2;
    }
    double rate = atof(argv[4]), seconds = atof(argv[5]);
    int nconn = argc > 6 ? atoi(argv[6]) : 32;
    double warmup = argc > 7 ? atof(argv[7]) : 0.0;
    double timeout_s = argc > 8 ? atof(argv[8]) : 2.0;
    if (rate <= 0 || seconds <= 0 || nconn <= 0 || warmup < 0 || timeout_s <= 0) {
        fprintf(stderr, "openloop: RATE, SECONDS, CONNECTIONS and TIMEOUT must be positive\n");
        return 2;
    }
    memset(&target, 0, sizeof target);
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &target.sin_addr) != 1) {
        fprintf(stderr, "openloop: HOST must be an IPv4 address\n");
        return 2;
    }
    request_len = (size_t)snprintf(request, sizeof request,
                                   "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: openloop\r\n\r\n",
                                   argv[3], argv[1], argv[2]);
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    epfd = epoll_create1(0);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &tev);

    struct conn *conns = calloc((size_t)nconn, sizeof *conns);
    struct conn **idle = calloc((size_t)nconn, sizeof *idle);
    int nidle = 0;
    for (int i = 0; i < nconn; i++) {
        if (open_conn(&conns[i]) < 0) {
            fprintf(stderr, "openloop: connect failed: %s\n", strerror(errno));
            return 1;
        }
        idle[nidle++] = &conns[i];
    }

    uint64_t total = (uint64_t)(rate * seconds);
    uint64_t interval_ns = (uint64_t)(1e9 / rate);
    uint64_t timeout_ns = (uint64_t)(timeout_s * 1e9);
    uint64_t warm_until_index = (uint64_t)(rate * warmup);
    uint64_t *queue = calloc(total + 1, sizeof *queue); /* due times waiting for a connection */
    uint64_t qhead = 0, qtail = 0;
    uint64_t next = 0; /* the next request index to become due */
    uint64_t completed = 0, recorded = 0, errors = 0, timeouts = 0, non2xx = 0;
    uint64_t max_queue = 0, max_late_ns = 0;
    uint64_t start = now_ns() + 1000000; /* 1 ms from now */
    uint64_t warm_end = start + warm_until_index * interval_ns;
    uint64_t hard_end = start + (uint64_t)(seconds * 1e9) + timeout_ns + 1000000000u;
    uint64_t measured_done_at = 0;
    struct epoll_event events[256];

    while (1) {
        uint64_t now = now_ns();
        while (next < total && start + next * interval_ns <= now) {
            queue[qtail++] = start + next * interval_ns;
            next++;
        }
        if (qtail - qhead > max_queue) max_queue = qtail - qhead;
        while (qhead < qtail && nidle > 0) {
            struct conn *c = idle[--nidle];
            c->due = queue[qhead++];
            c->busy = 1;
            c->have = 0;
            c->need = -1;
            if (now - c->due > max_late_ns) max_late_ns = now - c->due;
            ssize_t n = send(c->fd, request, request_len, MSG_NOSIGNAL);
            if (n != (ssize_t)request_len) { /* the connection is gone: count, replace */
                errors++;
                completed++;
                close_conn(c);
                if (open_conn(c) == 0) idle[nidle++] = c;
            }
        }
        if (next >= total && qhead == qtail && nidle == nconn) break;
        if (now > hard_end) break;
        for (int i = 0; i < nconn; i++) { /* per-request deadlines */
            struct conn *c = &conns[i];
            if (c->busy && now - c->due > timeout_ns) {
                timeouts++;
                completed++;
                close_conn(c);
                if (open_conn(c) == 0) idle[nidle++] = c;
            }
        }
        if (next < total) {
            uint64_t due = start + next * interval_ns;
            struct itimerspec its = {{0, 0}, {(time_t)(due / 1000000000u), (long)(due % 1000000000u)}};
            timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        }
        int n = epoll_wait(epfd, events, 256, next < total ? -1 : 50);
        if (n < 0 && errno != EINTR) break;
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == NULL) {
                uint64_t expirations;
                (void)!read(tfd, &expirations, sizeof expirations);
                continue;
            }
            ssize_t got = recv(c->fd, c->buf + c->have, READ_SIZE - c->have, 0);
            if (got <= 0) {
                if (got < 0 && errno == EAGAIN) continue;
                if (c->busy) {
                    errors++;
                    completed++;
                }
                close_conn(c);
                if (open_conn(c) == 0) {
                    /* the connection was idle (closed by the server) or its request failed */
                    int listed = 0;
                    for (int k = 0; k < nidle; k++) listed |= idle[k] == c;
                    if (!listed) idle[nidle++] = c;
                }
                continue;
            }
            if (!c->busy) continue; /* bytes nobody asked for: ignore */
            c->have += (size_t)got;
            int status = 0;
            if (c->need < 0) {
                long need = parse_head(c->buf, c->have, &status);
                if (need < 0) {
                    errors++;
                    completed++;
                    close_conn(c);
                    if (open_conn(c) == 0) idle[nidle++] = c;
                    continue;
                }
                if (need == 0) continue;
                c->need = need;
                if (status < 200 || status > 299) non2xx++;
            }
            if ((long)c->have >= c->need) {
                uint64_t done = now_ns();
                completed++;
                if (c->due >= warm_end) {
                    record(done - c->due);
                    recorded++;
                    measured_done_at = done;
                }
                c->busy = 0;
                c->have = 0;
                c->need = -1;
                idle[nidle++] = c;
            } else if (c->have >= READ_SIZE) {
                c->need -= (long)c->have; /* a long body: keep counting, drop the bytes */
                c->have = 0;
            }
        }
    }
    uint64_t busy_left = 0;
    for (int i = 0; i < nconn; i++) busy_left += (uint64_t)conns[i].busy;
    double measured_s = (double)(total - warm_until_index) / rate;
    double span_s = measured_done_at > warm_end ? (double)(measured_done_at - warm_end) / 1e9 : 0;
    printf("{\"target_rate\":%.1f,\"seconds\":%.3f,\"warmup_seconds\":%.3f,\"connections\":%d,"
           "\"due\":%llu,\"sent\":%llu,\"completed\":%llu,\"recorded\":%llu,"
           "\"errors\":%llu,\"timeouts\":%llu,\"unanswered\":%llu,\"non_2xx\":%llu,"
           "\"achieved_rate\":%.1f,\"completion_span_seconds\":%.3f,"
           "\"max_queue\":%llu,\"max_send_late_us\":%.1f,",
           rate, seconds, warmup, nconn, (unsigned long long)total,
           (unsigned long long)qhead, (unsigned long long)completed,
           (unsigned long long)recorded, (unsigned long long)errors,
           (unsigned long long)timeouts, (unsigned long long)(busy_left + (qtail - qhead)),
           (unsigned long long)non2xx,
           measured_s > 0 ? (double)recorded / (span_s > measured_s ? span_s : measured_s) : 0.0,
           span_s, (unsigned long long)max_queue, (double)max_late_ns / 1000.0);
    print_latency();
    printf("}\n");
    return 0;
}
