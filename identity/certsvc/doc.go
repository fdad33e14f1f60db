// Package certsvc is the control plane's certificate service (portcullis.identity.v1
// CertificateService): it authenticates a CSR's sender with a join token or its current SVID,
// checks the CSR asks for exactly the SPIFFE ID that credential is bound to, and has the CA sign
// it. Every refusal has a gRPC status, a reason label on the refusal metric and a log line that
// never contains a token or key.
//
// The service is registered on a gRPC server the caller owns (the same server later serves ADS);
// TLSConfig gives that server the control plane's own SVID and accepts client SVIDs when given.
package certsvc
