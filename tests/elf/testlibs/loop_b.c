int elfloop_a(int n);
int elfloop_b(int n) { return n <= 0 ? 0 : elfloop_a(n - 1) + 1; }
