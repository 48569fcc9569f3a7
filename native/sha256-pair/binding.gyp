{
  "targets": [
    {
      "target_name": "sha256_pair",
      "sources": ["sha256_pair.c"],
      "cflags": ["-O3", "-funroll-loops", "-Wall", "-Wextra"]
    }
  ]
}
