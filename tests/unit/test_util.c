/*
 * test_util: thread_slice(), the scheduler slice the answer's threads ask for
 * (publish.slice_us): held by the thread that asked (its first call only),
 * within the kernel's bounds, its policy and nice value kept, not passed on
 * to the threads it starts (unless its nice value is negative), and nothing
 * done under a policy other than SCHED_OTHER and SCHED_BATCH or for 0. Each
 * case runs on a thread of its own, so the test's main thread keeps the
 * default.
 *
 * The slice is read with sched_getattr(), as the kernel reports it from
 * Linux 6.12 on; before, it reports 0, and every case checks that the thread
 * is left as it was.
 *
 * And clock_now(): a clock that fails ends the process, logged.
 */
#include "config.h"

#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "util.h"

/* sched_getattr(2)'s first form, as daemon/util.c defines it. */
struct attr {
	uint32_t size;
	uint32_t sched_policy;
	uint64_t sched_flags;
	int32_t sched_nice;
	uint32_t sched_priority;
	uint64_t sched_runtime;
	uint64_t sched_deadline;
	uint64_t sched_period;
};

#define RESET_ON_FORK 0x01

/* Linux 6.12 and later take a fair thread's slice from sched_setattr(). */
static int slice_kernel(void)
{
	struct utsname u;
	int major = 0, minor = 0;

	assert_int_equal(uname(&u), 0);
	assert_int_equal(sscanf(u.release, "%d.%d", &major, &minor), 2);
	return major > 6 || (major == 6 && minor >= 12);
}

static struct attr attr_of_self(void)
{
	struct attr a = { .size = sizeof(a) };

	if (syscall(SYS_sched_getattr, 0, &a, sizeof(a), 0) != 0)
		memset(&a, 0xff, sizeof(a)); /* no policy, so every check fails */
	return a;
}

static void *read_own(void *out)
{
	*(struct attr *)out = attr_of_self();
	return NULL;
}

/* What a thread started now by the calling thread holds. */
static struct attr child(void)
{
	pthread_t t;
	struct attr a;

	memset(&a, 0xff, sizeof(a));
	if (pthread_create(&t, NULL, read_own, &a) == 0)
		pthread_join(t, NULL);
	return a;
}

struct slice_case {
	int64_t us;       /* asked for */
	uint64_t want_ns; /* held on a 6.12 kernel; 0: the default */
	int nice;         /* added before, to the test's; below 0 needs root */
	int policy;       /* set before */
};

/* What a case's thread saw; checked on the test's thread (cmocka's jumps). */
struct seen {
	int setup; /* setpriority() and sched_setscheduler(), 0 when both worked */
	int nice;  /* the nice value set */
	int nice_after;
	struct attr before, after, kid;
};

static void *ask(void *arg)
{
	const struct slice_case *c = ((void **)arg)[0];
	struct seen *s = ((void **)arg)[1];
	struct sched_param none = { 0 };

	s->nice = getpriority(PRIO_PROCESS, (id_t)gettid()) + c->nice;
	if (s->nice > 19)
		s->nice = 19;
	s->setup = setpriority(PRIO_PROCESS, (id_t)gettid(), s->nice) |
	    sched_setscheduler(0, c->policy, &none);
	s->before = attr_of_self();
	thread_slice("test", c->us);
	thread_slice("test", 3000); /* only a thread's first call counts */
	s->after = attr_of_self();
	s->kid = child();
	s->nice_after = getpriority(PRIO_PROCESS, (id_t)gettid());
	return NULL;
}

static void run_case(struct slice_case c)
{
	struct seen s;
	void *args[2] = { &c, &s };
	pthread_t t;

	assert_int_equal(pthread_create(&t, NULL, ask, args), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(s.setup, 0);
	assert_int_equal(s.after.sched_policy, c.policy);
	assert_int_equal(s.after.sched_nice, s.nice);
	assert_int_equal(s.nice_after, s.nice);
	if (c.want_ns && slice_kernel()) {
		assert_int_equal(s.after.sched_runtime, c.want_ns);
		if (s.nice < 0) { /* the kernel would reset the nice value with the slice */
			assert_int_equal(s.after.sched_flags & RESET_ON_FORK, 0);
			assert_int_equal(s.kid.sched_runtime, c.want_ns);
			assert_int_equal(s.kid.sched_nice, s.nice);
		} else {
			assert_int_equal(s.after.sched_flags & RESET_ON_FORK, RESET_ON_FORK);
			assert_int_equal(s.kid.sched_runtime, s.before.sched_runtime);
		}
	} else {
		/* Left as it was. */
		assert_memory_equal(&s.after, &s.before, sizeof(s.after));
		assert_int_equal(s.kid.sched_runtime, s.before.sched_runtime);
	}
}

static void test_slice_held_not_inherited(void **state)
{
	(void)state;
	run_case((struct slice_case){ .us = 100, .want_ns = 100000, .nice = 1 });
	run_case((struct slice_case){ .us = 2000, .want_ns = 2000000, .nice = 2 });
	run_case((struct slice_case){ .us = 2000, .want_ns = 2000000, .policy = SCHED_BATCH });
}

static void test_slice_within_kernel_bounds(void **state)
{
	(void)state;
	run_case((struct slice_case){ .us = 1, .want_ns = 100000 });
	run_case((struct slice_case){ .us = 50, .want_ns = 100000 });
	run_case((struct slice_case){ .us = 100000, .want_ns = 100000000 });
}

static void test_slice_zero_or_idle_leaves_the_thread(void **state)
{
	(void)state;
	run_case((struct slice_case){ .us = 0, .want_ns = 0, .nice = 1 });
	run_case((struct slice_case){ .us = 100, .want_ns = 0, .policy = SCHED_IDLE });
}

/* A negative nice value (root only): the started threads keep it, and the slice. */
static void test_slice_negative_nice_inherited(void **state)
{
	(void)state;
	if (geteuid() != 0)
		skip();
	run_case((struct slice_case){ .us = 300, .want_ns = 300000, .nice = -1 });
}

static void exit_handler(void)
{
	static const char line[] = "exit handler ran\n";

	if (write(STDERR_FILENO, line, sizeof(line) - 1) < 0)
		abort();
}

/*
 * A clock that fails ends ackd with a logged error instead of a wrong time,
 * and without running exit handlers under the other threads.
 */
static void test_clock_failure_is_fatal(void **state)
{
	int fds[2], status;
	char text[256] = "";
	size_t len = 0;
	ssize_t n;
	pid_t pid;
	struct timespec now = clock_now(CLOCK_MONOTONIC);

	(void)state;
	assert_true(now.tv_sec > 0 || now.tv_nsec > 0);
	assert_int_equal(pipe(fds), 0);
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* Not cmocka's handlers: a crash in the child must not pass as exit 1. */
		signal(SIGSEGV, SIG_DFL);
		signal(SIGABRT, SIG_DFL);
		signal(SIGBUS, SIG_DFL);
		signal(SIGILL, SIG_DFL);
		signal(SIGFPE, SIG_DFL);
		dup2(fds[1], STDERR_FILENO);
		atexit(exit_handler);
		clock_now((clockid_t)1000); /* no such clock: EINVAL */
		_exit(0);
	}
	close(fds[1]);
	while ((n = read(fds[0], text + len, sizeof(text) - 1 - len)) > 0)
		len += (size_t)n;
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 1);
	assert_non_null(strstr(text, "clock_gettime of clock 1000"));
	assert_null(strstr(text, "exit handler ran"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_slice_held_not_inherited),
		cmocka_unit_test(test_slice_within_kernel_bounds),
		cmocka_unit_test(test_slice_zero_or_idle_leaves_the_thread),
		cmocka_unit_test(test_slice_negative_nice_inherited),
		cmocka_unit_test(test_clock_failure_is_fatal),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
