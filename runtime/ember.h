/* ember.h: everything a training program needs. */
#ifndef EMBER_H
#define EMBER_H

#include "em_autograd.h"
#include "em_checkpoint.h"
#include "em_core.h"
#include "em_env.h"
#include "em_nn.h"
#include "em_ops.h"
#include "em_optim.h"

#include "coll.h"
#include "ddp_init.h"
#include "ddp.h"
#include "dl.h"
#include "dl_idx.h"

#endif
