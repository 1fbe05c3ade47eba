/* Fused image preprocessing: uint8 HWC (RGB or BGR, any row stride) -> normalized NCHW
 * float32 or float16, with bilinear resize and an optional letterbox.
 *
 * Resize follows OpenCV's INTER_LINEAR (and torch's bilinear, align_corners=False):
 * pixel centres at half-integers, src = (dst + 0.5) * in/out - 0.5, a negative source
 * coordinate clamps to 0, the last row/column repeats. No antialiasing on downscale,
 * like both references.
 */
#ifndef DEPLOYKIT_PREPROCESS_H
#define DEPLOYKIT_PREPROCESS_H

#include "deploykit/common.h"

/* Everything the kernel needs, passed by value to the CUDA kernel and by pointer to the
 * host build. Python mirrors it with ctypes; dk_host_preprocess_params_size() lets the
 * wrapper check the two layouts agree. */
typedef struct DkPreprocessParams {
    long long src_row_stride;   /* bytes between rows of the source image */
    long long src_image_stride; /* bytes between images of a batch */
    int src_h, src_w, src_c;    /* source size; src_c is 1, 3 or 4 (4: alpha ignored) */
    int swap_rb;                /* 1 when the source channel order differs from the model's */
    int out_c, out_h, out_w;    /* model input size, NCHW */
    int out_dtype;              /* DK_OUT_F32 or DK_OUT_F16 */
    int top, left;              /* where the resized image sits inside the output (letterbox) */
    int content_h, content_w;   /* size of the resized image; equal to out_h/out_w without letterbox */
    float pad_value;            /* letterbox fill, in pixel units (0..255) before normalization */
    float scale;                /* pixel / scale, then (. - mean) / std */
    float mean[4];
    float std[4];
} DkPreprocessParams;

/* One output coordinate -> the two source indices and the weight of the second. */
DK_HD void dk_source_index(int d, int in_size, int out_size, int* i0, int* i1, float* frac) {
    float ratio = (float)in_size / (float)out_size;
    float s = ((float)d + 0.5f) * ratio - 0.5f;
    if (s < 0.0f) s = 0.0f;
    int i = (int)s; /* s >= 0: truncation is floor */
    if (i > in_size - 1) i = in_size - 1;
    *i0 = i;
    *i1 = i < in_size - 1 ? i + 1 : i;
    *frac = s - (float)i;
    if (*i1 == i) *frac = 0.0f;
}

/* The bilinear value of source channel `c` (pixel units, 0..255). */
DK_HD float dk_bilinear_u8(const unsigned char* img, long long row_stride, int pix_stride, int c,
                           int y0, int y1, float fy, int x0, int x1, float fx) {
    const unsigned char* r0 = img + (long long)y0 * row_stride;
    const unsigned char* r1 = img + (long long)y1 * row_stride;
    float p00 = (float)r0[x0 * pix_stride + c], p01 = (float)r0[x1 * pix_stride + c];
    float p10 = (float)r1[x0 * pix_stride + c], p11 = (float)r1[x1 * pix_stride + c];
    /* Same association as torch's upsample_bilinear2d: rows first, then blend the rows. */
    float top = (1.0f - fx) * p00 + fx * p01;
    float bottom = (1.0f - fx) * p10 + fx * p11;
    return (1.0f - fy) * top + fy * bottom;
}

DK_HD void dk_store(void* dst, long long index, int dtype, float v) {
    if (dtype == DK_OUT_F16) {
        ((unsigned short*)dst)[index] = dk_f32_to_f16_bits(v);
    } else {
        ((float*)dst)[index] = v;
    }
}

/* Write every channel of output pixel (y, x) of image n. `src` points at image n. */
DK_HD void dk_preprocess_pixel(const DkPreprocessParams* p, const unsigned char* src, void* dst, int n, int y, int x) {
    long long plane = (long long)p->out_h * p->out_w;
    long long base = (long long)n * p->out_c * plane + (long long)y * p->out_w + x;
    int cy = y - p->top, cx = x - p->left;
    int inside = cy >= 0 && cy < p->content_h && cx >= 0 && cx < p->content_w;
    int y0 = 0, y1 = 0, x0 = 0, x1 = 0;
    float fy = 0.0f, fx = 0.0f;
    if (inside) {
        dk_source_index(cy, p->src_h, p->content_h, &y0, &y1, &fy);
        dk_source_index(cx, p->src_w, p->content_w, &x0, &x1, &fx);
    }
    for (int c = 0; c < p->out_c; ++c) {
        float v = p->pad_value;
        if (inside) {
            int sc = p->src_c == 1 ? 0 : (p->swap_rb && c < 3 ? 2 - c : c);
            v = dk_bilinear_u8(src, p->src_row_stride, p->src_c, sc, y0, y1, fy, x0, x1, fx);
        }
        /* The same expression as Preprocess.apply: (x / scale - mean) / std. */
        v = (v / p->scale - p->mean[c]) / p->std[c];
        dk_store(dst, base + (long long)c * plane, p->out_dtype, v);
    }
}

#endif /* DEPLOYKIT_PREPROCESS_H */
