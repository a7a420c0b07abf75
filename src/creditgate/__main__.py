from creditgate.cli import main

main()
