/* em_nn.h: modules (filled in with the module system). */
#ifndef EMBER_NN_H
#define EMBER_NN_H
#include "em_ops.h"
#endif
