"""crl_distill.student"""
