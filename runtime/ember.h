/* ember.h: everything a training program needs. It only includes the public headers, each of
 * which carries its own extern "C" guards for C++ and CUDA sources (wrapping the #includes here
 * as well would put the C library headers they include under C linkage too). */
#ifndef EMBER_H
#define EMBER_H

#include "em_autograd.h"
#include "em_checkpoint.h"
#include "em_core.h"
#include "em_dlpack.h"
#include "em_env.h"
#include "em_file.h"
#include "em_nn.h"
#include "em_ops.h"
#include "em_optim.h"

#include "coll.h"
#include "ddp_init.h"
#include "ddp.h"
#include "dl.h"
#include "dl_idx.h"

#endif
