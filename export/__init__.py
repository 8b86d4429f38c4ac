"""crl_distill.export"""
