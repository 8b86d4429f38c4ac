"""crl_distill.teacher"""
