#ifndef GAN_OS_H
#define GAN_OS_H

#include <node_api.h>

napi_value os_descriptor_limit(napi_env env, napi_callback_info info);

#endif
