"""Running requests: the continuous-batching scheduler, radix prefix cache, requests, sampling, grammar-constrained
decoding and the native decode step."""
