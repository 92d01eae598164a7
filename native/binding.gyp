{
  "targets": [
    {
      "target_name": "gan_native",
      "sources": ["src/gan_native.c"],
      "cflags": ["-O3", "-std=c11", "-fno-trapping-math", "-fno-math-errno", "-Wall", "-Wno-unused-parameter"],
      "include_dirs": ["<!@(node blas-flags.cjs include)"],
      "libraries": ["<!@(node blas-flags.cjs libs)"]
    }
  ]
}
