/* A stand-in for CUDA 12's libcufft.so.11, so that ASTRA's PyPI wheel (built against CUDA 12) loads
 * on a machine that has only CUDA 13's cuFFT. invdiff calls ASTRA's projectors (direct FP/BP), which
 * do not use cuFFT; ASTRA's own FBP/FDK algorithms do, and with this stand-in every cuFFT call fails
 * with CUFFT_NOT_SUPPORTED (16) instead of computing. Built by build_cufft_stub.sh; never shipped. */
typedef int cufftResult;
typedef int cufftHandle;
cufftResult cufftPlan1d(cufftHandle *plan, int nx, int type, int batch) { (void)plan; (void)nx; (void)type; (void)batch; return 16; }
cufftResult cufftDestroy(cufftHandle plan) { (void)plan; return 16; }
cufftResult cufftExecR2C(cufftHandle plan, void *in, void *out) { (void)plan; (void)in; (void)out; return 16; }
cufftResult cufftExecC2R(cufftHandle plan, void *in, void *out) { (void)plan; (void)in; (void)out; return 16; }
cufftResult cufftSetStream(cufftHandle plan, void *stream) { (void)plan; (void)stream; return 16; }
