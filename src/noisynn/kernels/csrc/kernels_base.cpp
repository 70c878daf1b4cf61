// The kernels compiled for the compiler's baseline instruction set (x86-64: SSE2).
#include <cstdint>
#include <cstdlib>

#include "kernels.h"

#define NN_ISA base
#define NN_ISA_NAME "baseline"
#define NN_AVX2 0
#include "kernels_impl.h"

namespace noisynn {
const KernelTable& base_table() { return base::kTable; }
}  // namespace noisynn
