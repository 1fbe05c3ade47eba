/* Shared definitions for the deploykit kernels: one source of per-element math.
 *
 * Every function here is DK_HD: `__host__ __device__` under nvcc / NVRTC and a plain
 * inline function under g++, so the CUDA kernels and the host build (the library the
 * tests and the CPU path of the Engine call through ctypes) run the same arithmetic.
 * Both builds turn off FMA contraction (nvcc/NVRTC --fmad=false, g++ -ffp-contract=off)
 * so the two agree bit for bit on everything except transcendental functions (expf).
 *
 * NVRTC has no system headers, so this file uses only built-in types.
 */
#ifndef DEPLOYKIT_COMMON_H
#define DEPLOYKIT_COMMON_H

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define DK_HD __host__ __device__ __forceinline__
#else
#define DK_HD static inline
#endif

#if !defined(__CUDACC_RTC__)
#include <math.h>
#endif

/* Pixel layouts of a uint8 input image (channel order of its 3 channels). */
#define DK_COLOR_RGB 0
#define DK_COLOR_BGR 1

/* Output element types. */
#define DK_OUT_F32 0
#define DK_OUT_F16 1

/* +infinity without <math.h> (NVRTC has no system headers). */
#define DK_INF dk_inf()
DK_HD float dk_inf(void) {
    union { unsigned int u; float f; } v;
    v.u = 0x7f800000u;
    return v.f;
}

DK_HD int dk_min_i(int a, int b) { return a < b ? a : b; }
DK_HD int dk_max_i(int a, int b) { return a > b ? a : b; }

/* float -> IEEE binary16 bits, round to nearest even (what numpy's astype(float16) and
 * __float2half_rn do). Written out so the host build needs no half type. */
DK_HD unsigned short dk_f32_to_f16_bits(float value) {
    union { float f; unsigned int u; } v;
    v.f = value;
    unsigned int x = v.u;
    unsigned int sign = (x >> 16) & 0x8000u;
    unsigned int mag = x & 0x7fffffffu;
    if (mag >= 0x7f800000u) { /* inf or nan: keep nan quiet */
        return (unsigned short)(sign | 0x7c00u | (mag > 0x7f800000u ? 0x200u : 0u));
    }
    if (mag >= 0x477ff000u) { /* rounds to >= 65520: overflow to inf */
        return (unsigned short)(sign | 0x7c00u);
    }
    if (mag < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        if (mag < 0x33000000u) return (unsigned short)sign; /* < 2^-25 rounds to 0 */
        unsigned int exp = mag >> 23;
        unsigned int mant = (mag & 0x7fffffu) | 0x800000u;
        unsigned int shift = 126u - exp; /* 14 + (112 - exp) */
        unsigned int half = mant >> shift;
        unsigned int rem = mant & ((1u << shift) - 1u);
        unsigned int halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (half & 1u))) half += 1u;
        return (unsigned short)(sign | half);
    }
    unsigned int half = ((mag - 0x38000000u) >> 13); /* rebias exponent 127 -> 15 */
    unsigned int rem = mag & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) half += 1u;
    return (unsigned short)(sign | half);
}

#endif /* DEPLOYKIT_COMMON_H */
