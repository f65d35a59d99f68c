"""Erasure (GDPR Art. 17): the request and receipt API, and journey's part of applying it."""
