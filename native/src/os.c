/*
 * What the coordinator asks of the operating system that Node does not offer: its limit on open
 * file descriptors, and raising the soft limit to the hard one (a process may, unprivileged).
 */
#include "os.h"

#include <errno.h>
#include <string.h>
#include <sys/resource.h>

#include "args.h"

/* descriptorLimit(raise): [soft, hard] after raising the soft limit to the hard one when `raise`. */
napi_value os_descriptor_limit(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 1, "descriptorLimit")) return NULL;
  bool raise = false;
  if (napi_get_value_bool(env, a.argv[0], &raise) != napi_ok) return args_fail(&a, "raise must be a boolean");
  struct rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return args_fail(&a, strerror(errno));
  if (raise && r.rlim_cur < r.rlim_max) {
    struct rlimit want = r;
    want.rlim_cur = r.rlim_max;
    /* Some systems cap the soft limit below an unlimited hard one (macOS: OPEN_MAX); keep what was. */
    if (setrlimit(RLIMIT_NOFILE, &want) == 0) r = want;
  }
  napi_value out, soft, hard;
  const double s = r.rlim_cur == RLIM_INFINITY ? -1 : (double)r.rlim_cur;
  const double h = r.rlim_max == RLIM_INFINITY ? -1 : (double)r.rlim_max;
  if (napi_create_array_with_length(env, 2, &out) != napi_ok || napi_create_double(env, s, &soft) != napi_ok ||
      napi_create_double(env, h, &hard) != napi_ok || napi_set_element(env, out, 0, soft) != napi_ok || napi_set_element(env, out, 1, hard) != napi_ok) {
    return napi_failed(env, "descriptorLimit result");
  }
  return out;
}
