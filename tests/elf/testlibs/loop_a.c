// Needs libelfloop_b.so, which needs this library back: a DT_NEEDED loop.
int elfloop_b(int n);
int elfloop_a(int n) { return n <= 0 ? 0 : elfloop_b(n - 1) + 1; }
