/* Files mapped into memory: the same-host regions the coordinator and its local workers share. */
#ifndef GAN_SHM_H
#define GAN_SHM_H

#include <node_api.h>

napi_value shm_map_file(napi_env env, napi_callback_info info);

#endif
