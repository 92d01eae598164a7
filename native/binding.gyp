{
  "targets": [
    {
      "target_name": "gan_native",
      "sources": [
        "src/addon.c", "src/args.c", "src/kernels.c", "src/array_math.c", "src/pool.c", "src/array_math_half.c", "src/quant8.c", "src/bit_delta.c", "src/shm.c",
        "<!@(node blas-flags.cjs sources)"
      ],
      "cflags": ["-O3", "-std=c11", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno", "-Wall", "-Wno-unused-parameter"],
      "xcode_settings": { "OTHER_CFLAGS": ["-O3", "-std=c11", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno"] },
      "include_dirs": ["<!@(node blas-flags.cjs include)"],
      "libraries": ["<!@(node blas-flags.cjs libs)"]
    }
  ]
}
