"""sssd"""
