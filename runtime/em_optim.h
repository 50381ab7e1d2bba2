/* em_optim.h: optimizers (filled in with the optimizers). */
#ifndef EMBER_OPTIM_H
#define EMBER_OPTIM_H
#include "em_nn.h"
#endif
