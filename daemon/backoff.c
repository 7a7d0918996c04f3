/*
 * backoff: the delay before a webhook's next attempt, Retry-After, and the
 * verdict on an HTTP status. Pure functions: no I/O, no clock, no locale.
 *
 * The delay doubles from retry.initial_ms per failed attempt until it
 * reaches retry.max_ms, then a jitter factor in [0.8, 1.2] spreads
 * subscribers that failed together. The doubling stops at the cap, so any
 * attempt number is safe.
 *
 * Retry-After (RFC 9110 section 10.2.3) is delay-seconds or an HTTP-date.
 * Dates are parsed by hand, not with strptime(), whose %a and %b follow the
 * process locale; English names are fixed by the RFC. timegm() is replaced
 * by days_from_civil() below for the same reason of purity.
 *
 * Threads: any; no shared state.
 */
#include "config.h"

#include <string.h>

#include "backoff.h"

/* --- backoff ---------------------------------------------------------------------- */

int64_t backoff_delay_ms(const struct conf_retry *r, int attempt, uint32_t rnd)
{
	int64_t max = r->max_ms > 0 ? r->max_ms : 1;
	int64_t base = r->initial_ms > 0 ? r->initial_ms : 1;
	double factor;

	if (base > max)
		base = max;
	for (int i = 1; i < attempt && base < max; i++)
		base = base > max / 2 ? max : base * 2;

	/* rnd 0 gives 0.8, UINT32_MAX gives 1.2. */
	factor = 0.8 + 0.4 * ((double)rnd / (double)UINT32_MAX);
	return (int64_t)((double)base * factor + 0.5);
}

/* --- Retry-After --------------------------------------------------------------------- */

static const char *const day_names[7] = { "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun" };
static const char *const long_day_names[7] = { "Monday", "Tuesday", "Wednesday", "Thursday",
	"Friday", "Saturday", "Sunday" };
static const char *const month_names[12] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul",
	"Aug", "Sep", "Oct", "Nov", "Dec" };

/* A calendar time as read; every field checked before use. */
struct date {
	int64_t year;
	int month; /* 1-12 */
	int day, hour, min, sec;
};

/* Days from 1970-01-01 to year-month-day, proleptic Gregorian (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static int64_t year_of_days(int64_t days)
{
	/* Inverse of days_from_civil(), year only. */
	int64_t z = days + 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;

	return yoe + era * 400 + (mp >= 10);
}

static int days_in_month(int64_t y, int m)
{
	static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

	return m == 2 && leap ? 29 : days[m - 1];
}

/* Match the literal lit at *p and step over it. */
static int lit(const char **p, const char *s)
{
	size_t n = strlen(s);

	if (strncmp(*p, s, n) != 0)
		return -1;
	*p += n;
	return 0;
}

/* One of names[0..count), case-sensitive as RFC 9110 writes them; its index. */
static int match_name(const char **p, const char *const names[], int count)
{
	for (int i = 0; i < count; i++)
		if (lit(p, names[i]) == 0)
			return i;
	return -1;
}

/* Exactly n digits. */
static int digits(const char **p, int n, int64_t *v)
{
	*v = 0;
	for (int i = 0; i < n; i++) {
		if ((*p)[i] < '0' || (*p)[i] > '9')
			return -1;
		*v = *v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	return 0;
}

static int int_digits(const char **p, int n, int *v)
{
	int64_t x;

	if (digits(p, n, &x) < 0)
		return -1;
	*v = (int)x;
	return 0;
}

/* "Jan" .. "Dec" as 1 .. 12. */
static int month(const char **p, int *m)
{
	int i = match_name(p, month_names, 12);

	if (i < 0)
		return -1;
	*m = i + 1;
	return 0;
}

/* "HH:MM:SS" */
static int time_of_day(const char **p, struct date *d)
{
	if (int_digits(p, 2, &d->hour) < 0 || lit(p, ":") < 0)
		return -1;
	if (int_digits(p, 2, &d->min) < 0 || lit(p, ":") < 0)
		return -1;
	return int_digits(p, 2, &d->sec);
}

/* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
static int imf_fixdate(const char *p, struct date *d)
{
	if (match_name(&p, day_names, 7) < 0 || lit(&p, ", ") < 0)
		return -1;
	if (int_digits(&p, 2, &d->day) < 0 || lit(&p, " ") < 0)
		return -1;
	if (month(&p, &d->month) < 0 || lit(&p, " ") < 0)
		return -1;
	if (digits(&p, 4, &d->year) < 0 || lit(&p, " ") < 0)
		return -1;
	if (time_of_day(&p, d) < 0 || lit(&p, " GMT") < 0)
		return -1;
	return *p == '\0' ? 0 : -1;
}

/*
 * rfc850-date: "Sunday, 06-Nov-94 08:49:37 GMT". A two-digit year that would
 * lie more than 50 years after now_year is the most recent past year with
 * those digits (RFC 9110 section 5.6.7).
 */
static int rfc850_date(const char *p, int64_t now_year, struct date *d)
{
	int64_t yy;

	if (match_name(&p, long_day_names, 7) < 0 || lit(&p, ", ") < 0)
		return -1;
	if (int_digits(&p, 2, &d->day) < 0 || lit(&p, "-") < 0)
		return -1;
	if (month(&p, &d->month) < 0 || lit(&p, "-") < 0)
		return -1;
	if (digits(&p, 2, &yy) < 0 || lit(&p, " ") < 0)
		return -1;
	if (time_of_day(&p, d) < 0 || lit(&p, " GMT") < 0 || *p != '\0')
		return -1;
	d->year = now_year - now_year % 100 + yy;
	if (d->year > now_year + 50)
		d->year -= 100;
	return 0;
}

/* asctime-date: "Sun Nov  6 08:49:37 1994" (day space-padded) or "Sun Nov 16 ..." */
static int asctime_date(const char *p, struct date *d)
{
	if (match_name(&p, day_names, 7) < 0 || lit(&p, " ") < 0)
		return -1;
	if (month(&p, &d->month) < 0 || lit(&p, " ") < 0)
		return -1;
	if (lit(&p, " ") == 0) {
		if (int_digits(&p, 1, &d->day) < 0)
			return -1;
	} else if (int_digits(&p, 2, &d->day) < 0) {
		return -1;
	}
	if (lit(&p, " ") < 0 || time_of_day(&p, d) < 0 || lit(&p, " ") < 0)
		return -1;
	if (digits(&p, 4, &d->year) < 0)
		return -1;
	return *p == '\0' ? 0 : -1;
}

/*
 * An HTTP-date as Unix milliseconds. The day name is checked for being one,
 * not for matching the date. Second 60 (a leap second) is accepted.
 */
static int http_date_ms(const char *s, int64_t now_wall_ms, int64_t *ms)
{
	int64_t now_days = now_wall_ms / 86400000 - (now_wall_ms % 86400000 < 0);
	struct date d = { 0 };

	if (imf_fixdate(s, &d) < 0 && rfc850_date(s, year_of_days(now_days), &d) < 0 &&
	    asctime_date(s, &d) < 0)
		return -1;
	if (d.day < 1 || d.day > days_in_month(d.year, d.month) || d.hour > 23 || d.min > 59 ||
	    d.sec > 60)
		return -1;
	*ms = ((days_from_civil(d.year, d.month, d.day) * 24 + d.hour) * 60 + d.min) * 60 + d.sec;
	*ms *= 1000;
	return 0;
}

/* OWS, and the CR LF a header callback may leave on the value. */
static int is_ows(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

int retry_after_parse(const char *value, int64_t now_wall_ms, int64_t cap_ms, int64_t *delay_ms)
{
	size_t len;
	int64_t delay;

	/* The field value excludes surrounding whitespace (RFC 9110 section 5.5). */
	while (is_ows(*value))
		value++;
	len = strlen(value);
	while (len > 0 && is_ows(value[len - 1]))
		len--;
	if (len == 0)
		return -1;
	if (cap_ms < 0)
		cap_ms = 0;

	if (value[0] >= '0' && value[0] <= '9') {
		/* delay-seconds = 1*DIGIT; any value past the cap is the cap. */
		int64_t secs = 0;

		for (size_t i = 0; i < len; i++) {
			if (value[i] < '0' || value[i] > '9')
				return -1;
			if (secs <= cap_ms / 1000)
				secs = secs * 10 + (value[i] - '0');
		}
		delay = secs > cap_ms / 1000 ? cap_ms : secs * 1000;
	} else {
		char date[48]; /* the longest form, rfc850-date, has 33 characters */
		int64_t at_ms;

		if (len >= sizeof(date))
			return -1;
		memcpy(date, value, len);
		date[len] = '\0';
		if (http_date_ms(date, now_wall_ms, &at_ms) < 0)
			return -1;
		delay = at_ms - now_wall_ms;
	}
	if (delay < 0)
		delay = 0;
	*delay_ms = delay > cap_ms ? cap_ms : delay;
	return 0;
}

/* --- verdicts ----------------------------------------------------------------------- */

enum webhook_verdict webhook_verdict(long status)
{
	if (status >= 200 && status <= 299)
		return VERDICT_DELIVERED;
	if (status == 410)
		return VERDICT_PAUSE;
	switch (status) {
	case 401: /* the endpoint is misconfigured: never drop */
	case 403:
	case 404:
	case 408: /* transient by definition */
	case 425:
	case 429:
		return VERDICT_RETRY;
	default:
		break;
	}
	if (status >= 400 && status <= 499)
		return VERDICT_POISON;
	/* 0 (no answer), 1xx, 3xx (not followed), 5xx and anything else. */
	return VERDICT_RETRY;
}

const char *webhook_verdict_str(enum webhook_verdict v)
{
	switch (v) {
	case VERDICT_DELIVERED:
		return "delivered";
	case VERDICT_POISON:
		return "poison";
	case VERDICT_RETRY:
		return "retry";
	case VERDICT_PAUSE:
		return "pause";
	}
	return "unknown";
}
