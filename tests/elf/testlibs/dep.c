// Found by libelfrunpath.so / libelfrpath.so through $ORIGIN/../lib.
int elfdep(int n) { return n * 2; }
