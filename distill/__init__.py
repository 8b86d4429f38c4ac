"""crl_distill.distill"""
