from crl_distill.cli import main

main()
