// CUDA kernel: fused preprocessing of a batch of same-size uint8 HWC images.
// The per-pixel math is dk_preprocess_pixel (include/deploykit/preprocess.h), shared
// with the host build. Launch: 2-D blocks over (x, y) of the output, blockIdx.z = image.
#include "deploykit/preprocess.h"

extern "C" __global__ void dk_preprocess(DkPreprocessParams p, const unsigned char* src, void* dst) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int n = blockIdx.z;
    if (x >= p.out_w || y >= p.out_h) return;
    dk_preprocess_pixel(&p, src + (long long)n * p.src_image_stride, dst, n, y, x);
}
