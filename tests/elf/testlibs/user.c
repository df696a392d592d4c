// Built twice: with DT_RUNPATH and with DT_RPATH "$ORIGIN/../lib", needing libelfdep.so.
int elfdep(int n);
int elfuser(int n) { return elfdep(n) + 1; }
