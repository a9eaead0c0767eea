#ifndef DERENROLL_TUI_READY_H
#define DERENROLL_TUI_READY_H

/*
 * Start-up timing for tests and benchmarks: once the first frame is on the
 * terminal, "PID SECONDS.NANOSECONDS" (CLOCK_REALTIME) goes to the file named
 * by the environment variable `env_name`, if it is set. Call before screen_run().
 */
void ready_report_first_frame(const char *env_name);

#endif
