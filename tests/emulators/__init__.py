"""Local stand-ins for the services the tests talk to over HTTP (AWS via moto, Kubernetes)."""
